// conv2d_lora at the UNet's scale (float, 2 threads, chunk-parallel path) against the unfused composition
// conv2d(x, W, b) + s·conv2d(conv2d(x, A), B): outputs and every gradient. The finite-difference checks in
// double are in gradcheck_ops_test.cpp.
#include <gtest/gtest.h>

#include "autograd/errors.h"
#include "autograd/ops.h"
#include "autograd/random.h"
#include "autograd/threads.h"

namespace lcd {
namespace {

float max_abs_diff(const Tensor& a, const Tensor& b) {
  float m = 0;
  for (int64_t i = 0; i < a.numel(); ++i) m = std::max(m, std::abs(a.data()[i] - b.data()[i]));
  return m;
}
float max_abs(const Tensor& a) {
  float m = 0;
  for (int64_t i = 0; i < a.numel(); ++i) m = std::max(m, std::abs(a.data()[i]));
  return m;
}

TEST(Conv2dLora, MatchesTheUnfusedBranchAtUnetScale) {
  set_num_threads(2);
  for (int stride : {1, 2}) {
    Rng rng(11 + stride);
    Tensor x = rng.normal_tensor({32, 64, 8, 8}), w = rng.normal_tensor({96, 64, 3, 3}), b = rng.normal_tensor({96});
    Tensor a = rng.normal_tensor({16, 64, 3, 3}), up = rng.normal_tensor({96, 16, 1, 1}), probe = rng.normal_tensor({32, 96, 8 / stride, 8 / stride});
    const double s = 0.75;
    const Conv2dOptions o{stride, 1};
    std::vector<Tensor> fused_grads, plain_grads;
    Tensor outputs[2];
    for (int fused = 0; fused < 2; ++fused) {
      std::vector<Tensor> in = {x.clone(), w.clone(), b.clone(), a.clone(), up.clone()};
      for (auto& t : in) t.set_requires_grad(true);
      Tensor y = fused ? conv2d_lora(in[0], in[1], in[2], in[3], in[4], s, o)
                       : add(conv2d(in[0], in[1], in[2], o), conv2d(conv2d(in[0], in[3], Tensor(), o), scale(in[4], s), Tensor()));
      sum(mul(y, probe)).backward();
      outputs[fused] = y;
      for (auto& t : in) (fused ? fused_grads : plain_grads).push_back(t.grad());
    }
    EXPECT_LE(max_abs_diff(outputs[0], outputs[1]), 1e-5f * max_abs(outputs[0])) << "stride " << stride;
    const char* names[] = {"x", "weight", "bias", "down", "up"};
    for (int i = 0; i < 5; ++i)
      EXPECT_LE(max_abs_diff(fused_grads[i], plain_grads[i]), 1e-5f * max_abs(plain_grads[i]))
          << "gradient of " << names[i] << ", stride " << stride;
  }
}

TEST(Conv2dLora, RejectsFactorsThatDoNotFitTheWeight) {
  Rng rng(3);
  Tensor x = rng.normal_tensor({1, 4, 5, 5}), w = rng.normal_tensor({6, 4, 3, 3});
  EXPECT_THROW(conv2d_lora(x, w, Tensor(), rng.normal_tensor({2, 4, 1, 1}), rng.normal_tensor({6, 2, 1, 1}), 1.0), ShapeError);
  EXPECT_THROW(conv2d_lora(x, w, Tensor(), rng.normal_tensor({2, 4, 3, 3}), rng.normal_tensor({5, 2, 1, 1}), 1.0), ShapeError);
  EXPECT_THROW(conv2d_lora(x, w, Tensor(), rng.normal_tensor({2, 4, 3, 3}), rng.normal_tensor({6, 3, 1, 1}), 1.0), ShapeError);
}

}  // namespace
}  // namespace lcd
