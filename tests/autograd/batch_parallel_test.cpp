// parallel_backward against gradients worked out by hand in double: parameters reached once, twice (a fresh
// write, then an add), through a broadcast, and not at all, with part buffers reused from an earlier call.
#include <gtest/gtest.h>

#include <vector>

#include "autograd/batch_parallel.h"
#include "autograd/flat_parameters.h"
#include "autograd/ops.h"
#include "autograd/random.h"

namespace lcd {
namespace {

// L = Σ_parts [ Σ_{b,j} x_bj·w1_j² + Σ_{b,j} x_bj·w2_j + Σ_k w5_k² (+ Σ_i w3_i² when w3 is used) ], so
//   ∂L/∂w1_j = 2 w1_j Σ_b x_bj,  ∂L/∂w2_j = Σ_b x_bj,  ∂L/∂w5_k = 2 w5_k · parts,  ∂L/∂w3_i = 2 w3_i · parts or 0.
// w3 is large enough (64 KB) that the part buffers come from the block cache, dirty, in the second call.
TEST(ParallelBackward, PartBuffersHoldExactlyEachPartsGradients) {
  const int64_t batch = 64, d = 8;
  ASSERT_GT(batch_parts(batch).count, 1);
  Rng rng(3);
  Tensor x = rng.normal_tensor({batch, d});
  Tensor w1 = rng.normal_tensor({d}), w2 = rng.normal_tensor({d}), w3 = rng.normal_tensor({16384});
  Tensor w5 = rng.normal_tensor({4});
  FlatParameters params({{"w1", w1}, {"w2", w2}, {"w3", w3}, {"w5", w5}});
  const int64_t parts = batch_parts(batch).count;
  for (bool use_w3 : {true, false}) {  // the second call reuses the first one's (now dirty) part buffers
    SCOPED_TRACE(use_w3 ? "w3 used" : "w3 unused");
    params.zero_grad();
    parallel_backward(params, batch, [&](int64_t begin, int64_t count) {
      Tensor xs = slice(x, 0, begin, count);  // (count, d)
      Tensor loss = add(add(sum(mul(mul(xs, w1), w1)), sum(mul(xs, w2))), sum(mul(w5, w5)));
      return use_w3 ? add(loss, sum(mul(w3, w3))) : loss;
    });
    for (int64_t j = 0; j < d; ++j) {
      double col = 0;
      for (int64_t b = 0; b < batch; ++b) col += x.data()[b * d + j];
      EXPECT_NEAR(w1.grad().data()[j], 2.0 * w1.data()[j] * col, 1e-4) << j;
      EXPECT_NEAR(w2.grad().data()[j], col, 1e-4) << j;
    }
    for (int64_t i = 0; i < w3.numel(); ++i) {
      const float expected = use_w3 ? static_cast<float>(2.0 * w3.data()[i] * parts) : 0.0f;
      if (use_w3) ASSERT_NEAR(w3.grad().data()[i], expected, 1e-5) << i;
      else ASSERT_EQ(w3.grad().data()[i], 0.0f) << i;
    }
    for (int64_t k = 0; k < 4; ++k) EXPECT_NEAR(w5.grad().data()[k], 2.0 * w5.data()[k] * parts, 1e-5) << k;
  }
}

}  // namespace
}  // namespace lcd
