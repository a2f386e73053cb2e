// The tape: accumulation, no-grad mode, frozen parameters, freeing after backward, iterative teardown.
#include <gtest/gtest.h>

#include <cmath>

#include "autograd/errors.h"
#include "autograd/flat_parameters.h"
#include "autograd/ops.h"
#include "autograd/threads.h"

namespace lcd {
namespace {

TEST(Tape, GradientsAccumulateAcrossUsesAndCalls) {
  Tensor x = Tensor::from_vector({2}, {1.5f, -2.0f});
  x.set_requires_grad(true);
  Tensor y = sum(add(mul(x, x), x));  // Σ x² + x → ∂ = 2x + 1
  y.backward();
  EXPECT_FLOAT_EQ(x.grad().data()[0], 4.0f);
  EXPECT_FLOAT_EQ(x.grad().data()[1], -3.0f);
  Tensor z = sum(x);  // a second graph adds 1 to each
  z.backward();
  EXPECT_FLOAT_EQ(x.grad().data()[0], 5.0f);
  EXPECT_FLOAT_EQ(x.grad().data()[1], -2.0f);
}

TEST(Tape, NoGradGuardRecordsNothing) {
  Tensor x = Tensor::full({3}, 2.0f);
  x.set_requires_grad(true);
  NoGradGuard guard;
  Tensor y = exp(x);
  EXPECT_FALSE(y.requires_grad());
  EXPECT_TRUE(y.is_leaf());
}

TEST(Tape, FrozenWeightGetsNoGradientBuffer) {
  Tensor w = Tensor::full({2, 3}, 0.5f);  // frozen: requires_grad false
  Tensor x = Tensor::full({4, 3}, 1.0f);
  x.set_requires_grad(true);
  sum(linear(x, w, Tensor())).backward();
  EXPECT_FALSE(w.has_grad());
  EXPECT_TRUE(x.has_grad());
  EXPECT_FLOAT_EQ(x.grad().data()[0], 1.0f);  // Σ_out w = 2 · 0.5
}

TEST(Tape, BackwardFreesTheGraph) {
  Tensor x = Tensor::full({2}, 1.0f);
  x.set_requires_grad(true);
  Tensor h = exp(x);
  Tensor y = sum(h);
  y.backward();
  EXPECT_TRUE(h.is_leaf()) << "intermediate node kept after backward";
  EXPECT_FALSE(h.has_grad()) << "intermediate gradient kept after backward";
  EXPECT_THROW(y.backward(), AutogradError);
}

TEST(Tape, LongChainsAreBuiltAndDroppedWithoutRecursion) {
  Tensor x = Tensor::full({1}, 1.0f);
  x.set_requires_grad(true);
  Tensor y = x;
  for (int i = 0; i < 200000; ++i) y = scale(y, 1.0);
  y = Tensor();  // teardown of a 200k-node graph must not overflow the stack
  Tensor z = x;
  for (int i = 0; i < 200000; ++i) z = scale(z, 1.0);
  sum(z).backward();  // and nor must the topological sort
  EXPECT_FLOAT_EQ(x.grad().data()[0], 1.0f);
}

TEST(Tape, BroadcastGradientIsSummedToTheInputShape) {
  Tensor a = Tensor::full({2, 3}, 1.0f);
  Tensor b = Tensor::from_vector({3}, {1, 2, 3});
  b.set_requires_grad(true);
  sum(mul(a, b)).backward();
  ASSERT_EQ(b.grad().shape(), Shape({3}));
  for (int i = 0; i < 3; ++i) EXPECT_FLOAT_EQ(b.grad().data()[i], 2.0f);
}

TEST(FlatParameters, BindsValuesAndGradientsAndClips) {
  Tensor a = Tensor::from_vector({2}, {1, 2});
  Tensor b = Tensor::from_vector({1}, {3});
  FlatParameters flat({{"a", a}, {"b", b}});
  ASSERT_EQ(flat.size(), 3);
  EXPECT_EQ(flat.values()[2], 3.0f);
  sum(mul(add(a, a), a)).backward();  // ∂ Σ 2a² = 4a
  sum(scale(b, 3.0)).backward();
  EXPECT_FLOAT_EQ(flat.grads()[0], 4.0f);
  EXPECT_FLOAT_EQ(flat.grads()[1], 8.0f);
  EXPECT_FLOAT_EQ(flat.grads()[2], 3.0f);
  const double norm = flat.clip_grad_norm(1.0);
  EXPECT_NEAR(norm, std::sqrt(16.0 + 64.0 + 9.0), 1e-5);
  EXPECT_NEAR(flat.grad_norm(), 1.0, 1e-5);
  flat.values()[0] = 7.0f;  // the tensor sees the flat buffer
  EXPECT_EQ(a.data()[0], 7.0f);
}

// The norm of many gradients (several blocks, summed in parallel) against a long double sum, and the same
// bits with one and two threads.
TEST(FlatParameters, GradNormOfManyValuesIsExactAndIgnoresTheThreadCount) {
  Tensor a = Tensor::zeros({300001});
  FlatParameters flat({{"a", a}});
  long double expected = 0;
  for (int64_t i = 0; i < flat.size(); ++i) {
    const float g = static_cast<float>(std::sin(0.37 * static_cast<double>(i)) * (1 + i % 7));
    flat.grads()[i] = g;
    expected += static_cast<long double>(g) * g;
  }
  const ThreadCountGuard thread_count(1);
  const double one = flat.grad_norm();
  set_num_threads(2);
  const double two = flat.grad_norm();
  EXPECT_EQ(one, two);
  EXPECT_NEAR(one, std::sqrt(static_cast<double>(expected)), 1e-12 * one);
}

TEST(Shapes, MismatchesAreTypedErrorsNamingTheShapes) {
  Tensor a = Tensor::zeros({2, 3});
  Tensor b = Tensor::zeros({4});
  try {
    add(a, b);
    FAIL() << "no error";
  } catch (const ShapeError& e) {
    EXPECT_NE(std::string(e.what()).find("(2, 3)"), std::string::npos) << e.what();
  }
  EXPECT_THROW(conv2d(Tensor::zeros({1, 2, 4, 4}), Tensor::zeros({3, 5, 3, 3}), Tensor()), ShapeError);
  EXPECT_THROW(attention(Tensor::zeros({1, 2, 6}), Tensor::zeros({1, 2, 6}), Tensor::zeros({1, 2, 6}), 4), ShapeError);
}

}  // namespace
}  // namespace lcd
