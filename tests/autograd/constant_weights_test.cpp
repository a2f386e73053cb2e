// ConstantWeightsScope: inside one, trainable weights (flat parameters, written by the optimiser with no
// version count) keep their kernel forms; a later scope must see the values the optimiser wrote in between,
// never the forms of the scope before. Checked against the same layers run outside any scope, with the
// values they hold at that moment: a form kept too long is an O(1) error (the written weights move by 0.5).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "autograd/batch_parallel.h"
#include "autograd/constant_weights.h"
#include "autograd/cpu/precision.h"
#include "autograd/flat_parameters.h"
#include "autograd/ops.h"
#include "autograd/random.h"
#include "autograd/tape.h"

namespace lcd {
namespace {

struct Result {
  std::vector<float> y, grads;
};

// A 3×3 convolution (direct kernel) and a linear (GEMM) with trainable weights; y = linear(conv(x)), and the
// gradients of Σ y² with respect to every parameter.
struct TwoLayers {
  Rng rng{11};
  Tensor small(const Shape& shape) { return scale(rng.normal_tensor(shape), 0.1); }
  Tensor x = rng.normal_tensor({4, 8, 8, 16});  // (N, H, W, Cin)
  Tensor conv_w = small({32, 16, 3, 3}), conv_b = small({32});
  Tensor lin_w = small({24, 32}), lin_b = small({24});
  FlatParameters params{{{"conv.weight", conv_w}, {"conv.bias", conv_b}, {"lin.weight", lin_w}, {"lin.bias", lin_b}}};

  Result run() {
    params.zero_grad();
    Tensor h = conv2d_nhwc(x, conv_w, conv_b, Conv2dOptions{1, 1});  // (N, H, W, 32)
    Tensor y = linear(h, lin_w, lin_b);                               // (N, H, W, 24)
    sum(mul(y, y)).backward();
    Result r;
    r.y.assign(y.data(), y.data() + y.numel());
    r.grads.assign(params.grads(), params.grads() + params.size());
    return r;
  }
  // What the optimiser does: writes the flat buffer directly.
  void step() {
    for (int64_t i = 0; i < params.size(); ++i) params.values()[i] += (i % 2 ? 0.5f : -0.5f);
  }
};

// |got − want| ≤ tol · max |want| elementwise (sums with cancellation err relative to their terms, not to
// themselves).
void expect_same(const std::vector<float>& got, const std::vector<float>& want, double tol, const char* what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  double scale = 0;
  for (float v : want) scale = std::max(scale, double(std::fabs(v)));
  for (size_t i = 0; i < got.size(); ++i) ASSERT_NEAR(got[i], want[i], tol * scale) << what << " [" << i << "]";
}

TEST(ConstantWeightsScope, KeptFormsMatchUncachedAndFollowTheOptimiser) {
  std::vector<Precision> precisions{Precision::kFp32};
  if (bf16_supported()) precisions.push_back(Precision::kBf16);
  for (Precision p : precisions) {
    SCOPED_TRACE(p == Precision::kBf16 ? "bf16" : "fp32");
    PrecisionGuard guard(p);
    // Outside a scope every use converts the weights; inside, the GEMM's weight is packed instead of read
    // plain, which may round differently in the last bits (a different kernel), so the two are compared at
    // a tolerance far below the written steps.
    const double tol = p == Precision::kBf16 ? 1e-3 : 1e-5;
    TwoLayers t;
    for (int round = 0; round < 3; ++round) {
      SCOPED_TRACE("after " + std::to_string(round) + " optimiser steps");
      const Result uncached = t.run();
      Result first, second;
      {
        ConstantWeightsScope scope;
        first = t.run();   // makes and keeps the forms
        second = t.run();  // reads the kept ones
      }
      expect_same(first.y, uncached.y, tol, "y, first use");
      expect_same(first.grads, uncached.grads, tol, "gradients, first use");
      // The kept forms are the ones made from the same values: exactly the same results.
      expect_same(second.y, first.y, 0.0, "y, kept forms");
      expect_same(second.grads, first.grads, 0.0, "gradients, kept forms");
      t.step();  // between scopes, as the optimiser runs after parallel_backward
    }
  }
}

// parallel_backward opens a scope around its parts: the parts share the forms, and a step between two calls
// is seen by the second.
TEST(ConstantWeightsScope, ParallelBackwardSeesEachStepsValues) {
  PrecisionGuard fp32(Precision::kFp32);  // fp32 sums in both orders: a stale form would be off by O(1)
  TwoLayers t;
  const int64_t batch = 64;
  Tensor x = Rng(5).normal_tensor({batch, 4, 4, 16});  // (N, H, W, Cin), cut into parts
  ASSERT_GT(batch_parts(batch).count, 1);
  auto loss_of = [&](int64_t begin, int64_t count) {
    Tensor h = conv2d_nhwc(slice(x, 0, begin, count), t.conv_w, t.conv_b, Conv2dOptions{1, 1});
    Tensor y = linear(h, t.lin_w, t.lin_b);
    return sum(mul(y, y));
  };
  for (int round = 0; round < 2; ++round) {
    SCOPED_TRACE("after " + std::to_string(round) + " optimiser steps");
    t.params.zero_grad();
    const double parallel = parallel_backward(t.params, batch, loss_of);
    const std::vector<float> parallel_grads(t.params.grads(), t.params.grads() + t.params.size());
    // The same sum, one sample at a time, outside any scope.
    t.params.zero_grad();
    double serial = 0;
    for (int64_t b = 0; b < batch; ++b) {
      Tensor l = loss_of(b, 1);
      serial += l.item();
      l.backward();
    }
    const std::vector<float> serial_grads(t.params.grads(), t.params.grads() + t.params.size());
    EXPECT_NEAR(parallel, serial, 1e-4 * std::fabs(serial));
    expect_same(parallel_grads, serial_grads, 1e-5, "gradients");
    t.step();
  }
}

}  // namespace
}  // namespace lcd
