// AdamW against its equations evaluated independently in double for a few steps.
#include <gtest/gtest.h>

#include <cmath>

#include "autograd/flat_parameters.h"
#include "train/adamw.h"

namespace lcd {
namespace {

TEST(AdamW, MatchesTheDecoupledUpdateWithBiasCorrection) {
  Tensor w = Tensor::from_vector({3}, {0.5f, -1.0f, 2.0f});
  FlatParameters flat({{"w", w}});
  AdamWConfig cfg{0.9, 0.999, 1e-8, 0.1};
  AdamW opt(flat, cfg);
  double p[3] = {0.5, -1.0, 2.0}, m[3] = {0, 0, 0}, v[3] = {0, 0, 0};
  const double grads[3][3] = {{0.1, -0.2, 0.3}, {0.05, 0.4, -0.1}, {-0.3, 0.0, 0.2}};
  const double lr = 0.01;
  for (int t = 1; t <= 3; ++t) {
    for (int i = 0; i < 3; ++i) flat.grads()[i] = static_cast<float>(grads[t - 1][i]);
    opt.step(lr);
    for (int i = 0; i < 3; ++i) {
      const double g = grads[t - 1][i];
      p[i] -= lr * cfg.weight_decay * p[i];
      m[i] = cfg.beta1 * m[i] + (1 - cfg.beta1) * g;
      v[i] = cfg.beta2 * v[i] + (1 - cfg.beta2) * g * g;
      const double mhat = m[i] / (1 - std::pow(cfg.beta1, t)), vhat = v[i] / (1 - std::pow(cfg.beta2, t));
      p[i] -= lr * mhat / (std::sqrt(vhat) + cfg.eps);
    }
  }
  for (int i = 0; i < 3; ++i) EXPECT_NEAR(w.data()[i], p[i], 1e-6);
}

}  // namespace
}  // namespace lcd
