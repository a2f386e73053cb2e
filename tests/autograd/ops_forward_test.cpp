// Forward results of the GEMM-based and fused ops against direct textbook loops written here independently
// (the gradient checks only prove that backward matches forward, not that forward is right).
#include <gtest/gtest.h>

#include <cmath>

#include "autograd/gradcheck.h"
#include "autograd/ops.h"

namespace lcd {
namespace {

void expect_close(const TensorD& got, const TensorD& want, double tol) {
  ASSERT_EQ(got.shape(), want.shape());
  for (int64_t i = 0; i < got.numel(); ++i) ASSERT_NEAR(got.data()[i], want.data()[i], tol) << "element " << i;
}

TEST(OpsForward, Conv2dMatchesDirectConvolution) {
  for (auto [stride, pad, kh, kw, extra] :
       {std::array<int, 5>{1, 1, 3, 3, 0}, {2, 1, 3, 3, 0}, {1, 0, 1, 1, 0}, {2, 2, 2, 3, 0}, {2, 0, 3, 3, 1}}) {
    TensorD x = random_tensor({2, 3, 7, 6}, 1, false), w = random_tensor({4, 3, kh, kw}, 2, false),
            b = random_tensor({4}, 3, false);
    TensorD y = conv2d(x, w, b, Conv2dOptions{stride, pad, extra});
    const int64_t ho = (7 + 2 * pad + extra - kh) / stride + 1, wo = (6 + 2 * pad + extra - kw) / stride + 1;
    TensorD want = TensorD::zeros({2, 4, ho, wo});
    for (int n = 0; n < 2; ++n)
      for (int o = 0; o < 4; ++o)
        for (int i = 0; i < ho; ++i)
          for (int j = 0; j < wo; ++j) {
            double acc = b.data()[o];
            for (int c = 0; c < 3; ++c)
              for (int p = 0; p < kh; ++p)
                for (int q = 0; q < kw; ++q) {
                  const int ii = i * stride - pad + p, jj = j * stride - pad + q;
                  if (ii < 0 || ii >= 7 || jj < 0 || jj >= 6) continue;
                  acc += w.data()[((o * 3 + c) * kh + p) * kw + q] * x.data()[((n * 3 + c) * 7 + ii) * 6 + jj];
                }
            want.data()[((n * 4 + o) * ho + i) * wo + j] = acc;
          }
    expect_close(y, want, 1e-12);
  }
}

TEST(OpsForward, AttentionMatchesPerHeadSoftmax) {
  const int B = 2, Lq = 3, Lk = 4, C = 6, H = 3, d = 2;
  TensorD q = random_tensor({B, Lq, C}, 4, false), k = random_tensor({B, Lk, C}, 5, false),
          v = random_tensor({B, Lk, C}, 6, false);
  TensorD y = attention(q, k, v, H);
  TensorD want = TensorD::zeros({B, Lq, C});
  for (int b = 0; b < B; ++b)
    for (int h = 0; h < H; ++h)
      for (int i = 0; i < Lq; ++i) {
        std::vector<double> s(Lk);
        double m = -1e300, z = 0;
        for (int j = 0; j < Lk; ++j) {
          s[j] = 0;
          for (int e = 0; e < d; ++e) s[j] += q.data()[(b * Lq + i) * C + h * d + e] * k.data()[(b * Lk + j) * C + h * d + e];
          s[j] /= std::sqrt(double(d));
          m = std::max(m, s[j]);
        }
        for (int j = 0; j < Lk; ++j) z += (s[j] = std::exp(s[j] - m));
        for (int e = 0; e < d; ++e) {
          double acc = 0;
          for (int j = 0; j < Lk; ++j) acc += s[j] / z * v.data()[(b * Lk + j) * C + h * d + e];
          want.data()[(b * Lq + i) * C + h * d + e] = acc;
        }
      }
  expect_close(y, want, 1e-12);
}

TEST(OpsForward, GroupNormMatchesDefinition) {
  TensorD x = random_tensor({2, 4, 3, 2}, 7, false), g = random_tensor({4}, 8, false), b = random_tensor({4}, 9, false);
  TensorD y = group_norm(x, 2, g, b, 1e-5);
  TensorD want = TensorD::zeros(x.shape());
  for (int n = 0; n < 2; ++n)
    for (int grp = 0; grp < 2; ++grp) {
      double mu = 0, var = 0;
      for (int c = grp * 2; c < grp * 2 + 2; ++c)
        for (int s = 0; s < 6; ++s) mu += x.data()[(n * 4 + c) * 6 + s];
      mu /= 12;
      for (int c = grp * 2; c < grp * 2 + 2; ++c)
        for (int s = 0; s < 6; ++s) var += std::pow(x.data()[(n * 4 + c) * 6 + s] - mu, 2);
      var /= 12;
      for (int c = grp * 2; c < grp * 2 + 2; ++c)
        for (int s = 0; s < 6; ++s) {
          const int idx = (n * 4 + c) * 6 + s;
          want.data()[idx] = (x.data()[idx] - mu) / std::sqrt(var + 1e-5) * g.data()[c] + b.data()[c];
        }
    }
  expect_close(y, want, 1e-12);
}

TEST(OpsForward, LayerNormGeluSiluSoftmaxMatchDefinitions) {
  TensorD x = random_tensor({2, 5}, 10, false);
  TensorD ln = layer_norm(x, TensorD(), TensorD(), 1e-5);
  TensorD ge = gelu(x), gt = gelu(x, GeluApproximation::kTanh), si = silu(x), sm = softmax(x);
  for (int r = 0; r < 2; ++r) {
    double mu = 0, var = 0, z = 0;
    for (int i = 0; i < 5; ++i) mu += x.data()[r * 5 + i] / 5;
    for (int i = 0; i < 5; ++i) var += std::pow(x.data()[r * 5 + i] - mu, 2) / 5;
    for (int i = 0; i < 5; ++i) z += std::exp(x.data()[r * 5 + i]);
    for (int i = 0; i < 5; ++i) {
      const double v = x.data()[r * 5 + i];
      EXPECT_NEAR(ln.data()[r * 5 + i], (v - mu) / std::sqrt(var + 1e-5), 1e-12);
      EXPECT_NEAR(ge.data()[r * 5 + i], v * 0.5 * std::erfc(-v / std::sqrt(2.0)), 1e-12);
      EXPECT_NEAR(gt.data()[r * 5 + i], 0.5 * v * (1 + std::tanh(std::sqrt(2 / M_PI) * (v + 0.044715 * v * v * v))), 1e-12);
      EXPECT_NEAR(si.data()[r * 5 + i], v / (1 + std::exp(-v)), 1e-12);
      EXPECT_NEAR(sm.data()[r * 5 + i], std::exp(v) / z, 1e-12);
    }
  }
}

TEST(OpsForward, ShapeOpsMoveTheRightElements) {
  TensorD x = TensorD::from_vector({2, 3}, {0, 1, 2, 3, 4, 5});
  TensorD t = permute(x, {1, 0});
  EXPECT_EQ(t.shape(), Shape({3, 2}));
  EXPECT_EQ(t.data()[1], 3);  // t[0][1] = x[1][0]
  TensorD c = concat(std::vector<TensorD>{x, x}, 1);
  EXPECT_EQ(c.shape(), Shape({2, 6}));
  EXPECT_EQ(c.data()[6], 3);  // row 1 starts with x[1][0]
  TensorD s = slice(c, 1, 2, 2);
  EXPECT_EQ(s.data()[0], 2);
  EXPECT_EQ(s.data()[1], 0);
  TensorD u = upsample_nearest2x(reshape(x, Shape{1, 1, 2, 3}));
  EXPECT_EQ(u.shape(), Shape({1, 1, 4, 6}));
  EXPECT_EQ(u.data()[6 * 3 + 5], 5);  // u[3][5] = x[1][2]
  TensorD e = embedding(x, {1, 1, 0});
  EXPECT_EQ(e.data()[3], 3);
  EXPECT_EQ(e.data()[6], 0);
  TensorD sm = sum(x, {0});
  EXPECT_EQ(sm.data()[2], 7);
}

TEST(OpsForward, LossesMatchDefinitions) {
  TensorD p = TensorD::from_vector({3}, {1, 2, 3}), t = TensorD::from_vector({3}, {1, 0, 4});
  EXPECT_NEAR(mse_loss(p, t).item(), (0 + 4 + 1) / 3.0, 1e-12);
  const double c = 0.5;
  EXPECT_NEAR(pseudo_huber_loss(p, t, c).item(),
              ((std::sqrt(c * c) - c) + (std::sqrt(4 + c * c) - c) + (std::sqrt(1 + c * c) - c)) / 3, 1e-12);
  TensorD z = TensorD::from_vector({1, 3}, {0, std::log(2.0), 0});
  EXPECT_NEAR(cross_entropy(z, {1}).item(), -std::log(2.0 / 4.0), 1e-12);
}

}  // namespace
}  // namespace lcd
