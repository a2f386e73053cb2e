// The gradient check must be able to fail: deliberately wrong backward functions (transposed, mis-signed,
// mis-scaled) recorded on the tape are caught.
#include <gtest/gtest.h>

#include "autograd/gradcheck.h"
#include "autograd/ops.h"

namespace lcd {
namespace {

enum class Bug { kNone, kTransposed, kSignFlipped, kHalved };

// y = A B for square A, B with a backward that may carry a bug in ∂A.
TensorD buggy_matmul(const TensorD& a, const TensorD& b, Bug bug) {
  TensorD y;
  {
    NoGradGuard no_grad;
    y = matmul(a, b);
  }
  record<double>(y, "buggy_matmul", {&a, &b}, [a, b, bug](const TensorD& g) {
    const int64_t n = a.size(0);
    Eigen::MatrixXd da = g.matrix(n, n) * b.matrix(n, n).transpose();
    if (bug == Bug::kTransposed) da.transposeInPlace();
    if (bug == Bug::kSignFlipped) da = -da;
    if (bug == Bug::kHalved) da *= 0.5;
    if (needs_grad(a)) MatrixMap<double>(grad_buffer(a), n, n) += da;
    if (needs_grad(b)) MatrixMap<double>(grad_buffer(b), n, n) += a.matrix(n, n).transpose() * g.matrix(n, n);
  });
  return y;
}

GradcheckResult check(Bug bug) {
  return gradcheck([bug](const std::vector<TensorD>& x) { return buggy_matmul(x[0], x[1], bug); },
                   {random_tensor({3, 3}, 1), random_tensor({3, 3}, 2)});
}

TEST(GradcheckHarness, AcceptsACorrectGradient) { EXPECT_TRUE(check(Bug::kNone).ok) << check(Bug::kNone).message; }
TEST(GradcheckHarness, CatchesATransposedGradient) { EXPECT_FALSE(check(Bug::kTransposed).ok); }
TEST(GradcheckHarness, CatchesAMisSignedGradient) { EXPECT_FALSE(check(Bug::kSignFlipped).ok); }
TEST(GradcheckHarness, CatchesAMisScaledGradient) { EXPECT_FALSE(check(Bug::kHalved).ok); }

TEST(GradcheckHarness, ReportsAnOutputThatRecordedNothing) {
  auto r = gradcheck(
      [](const std::vector<TensorD>& x) {
        NoGradGuard g;
        return exp(x[0]);
      },
      {random_tensor({2}, 3)});
  EXPECT_FALSE(r.ok);
}

}  // namespace
}  // namespace lcd
