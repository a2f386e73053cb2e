// AdamW against its equations evaluated independently in double for a few steps.
#include <gtest/gtest.h>

#include <cmath>
#include <stdexcept>

#include "autograd/flat_parameters.h"
#include "train/adamw.h"

namespace lcd {
namespace {

constexpr double kGrads[3][4] = {{0.1, -0.2, 0.3, 0.02}, {0.05, 0.4, -0.1, -0.6}, {-0.3, 0.0, 0.2, 0.1}};

// Three AdamW steps in double, parameter i at learning rate lr · lr_factor[i].
void reference_steps(double p[4], const double lr_factor[4], double lr, const AdamWConfig& cfg) {
  double m[4] = {}, v[4] = {};
  for (int t = 1; t <= 3; ++t)
    for (int i = 0; i < 4; ++i) {
      const double g = kGrads[t - 1][i], lr_i = lr * lr_factor[i];
      p[i] -= lr_i * cfg.weight_decay * p[i];
      m[i] = cfg.beta1 * m[i] + (1 - cfg.beta1) * g;
      v[i] = cfg.beta2 * v[i] + (1 - cfg.beta2) * g * g;
      const double mhat = m[i] / (1 - std::pow(cfg.beta1, t)), vhat = v[i] / (1 - std::pow(cfg.beta2, t));
      p[i] -= lr_i * mhat / (std::sqrt(vhat) + cfg.eps);
    }
}

void run_steps(FlatParameters& flat, AdamW& opt, double lr) {
  for (int t = 1; t <= 3; ++t) {
    for (int i = 0; i < 4; ++i) flat.grads()[i] = static_cast<float>(kGrads[t - 1][i]);
    opt.step(lr);
  }
}

TEST(AdamW, MatchesTheDecoupledUpdateWithBiasCorrection) {
  Tensor w = Tensor::from_vector({4}, {0.5f, -1.0f, 2.0f, 0.25f});
  FlatParameters flat({{"w", w}});
  AdamWConfig cfg{0.9, 0.999, 1e-8, 0.1};
  AdamW opt(flat, cfg);
  run_steps(flat, opt, 0.01);
  double p[4] = {0.5, -1.0, 2.0, 0.25};
  const double same[4] = {1, 1, 1, 1};
  reference_steps(p, same, 0.01, cfg);
  for (int i = 0; i < 4; ++i) EXPECT_NEAR(w.data()[i], p[i], 1e-6);
}

// A range with its own learning rate behaves as a torch parameter group with lr · factor: its decay scales too,
// and the parameters outside it are untouched by the factor.
TEST(AdamW, ScaledRangeTakesItsOwnLearningRate) {
  Tensor a = Tensor::from_vector({2}, {0.5f, -1.0f});
  Tensor b = Tensor::from_vector({1}, {2.0f});
  Tensor c = Tensor::from_vector({1}, {0.25f});
  FlatParameters flat({{"a", a}, {"b", b}, {"c", c}});
  AdamWConfig cfg{0.9, 0.999, 1e-8, 0.1};
  AdamW opt(flat, cfg);
  opt.scale_lr(2, 3, 10.0);  // b alone
  run_steps(flat, opt, 0.01);
  double p[4] = {0.5, -1.0, 2.0, 0.25};
  const double factor[4] = {1, 1, 10, 1};
  reference_steps(p, factor, 0.01, cfg);
  EXPECT_NEAR(a.data()[0], p[0], 1e-6);
  EXPECT_NEAR(a.data()[1], p[1], 1e-6);
  EXPECT_NEAR(b.data()[0], p[2], 1e-6);
  EXPECT_NEAR(c.data()[0], p[3], 1e-6);
  EXPECT_THROW(opt.scale_lr(1, 3, 2.0), std::invalid_argument);  // overlaps b
  EXPECT_THROW(opt.scale_lr(3, 5, 2.0), std::invalid_argument);  // past the end
}

}  // namespace
}  // namespace lcd
