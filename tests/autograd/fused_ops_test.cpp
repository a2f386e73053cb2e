// The channels-last and fused ops against compositions of the independent NCHW / unfused ops, in float at
// the models' shapes (every batch the tools use, odd sizes) and in double: group_norm_nhwc(+SiLU) against
// permute → group_norm → silu, geglu against chunk → gelu → mul, layer_norm against its composition of
// broadcasting ops, upsample_nearest2x_nhwc against the NCHW upsample. Outputs and every gradient.
#include <gtest/gtest.h>

#include <functional>

#include "autograd/cpu/precision.h"
#include "autograd/gradcheck.h"
#include "autograd/ops.h"
#include "autograd/threads.h"

namespace lcd {
namespace {

template <typename T>
using OpT = std::function<TensorT<T>(const std::vector<TensorT<T>>&)>;

// max |a − b| / max(1, max |b|) over the output and every gradient of sum(y ⊙ probe).
template <typename T>
double worst_difference(const OpT<T>& mine, const OpT<T>& reference, const std::vector<TensorD>& inputs) {
  double worst = 0;
  std::vector<TensorT<T>> grads[2];
  TensorT<T> outs[2];
  for (int which = 0; which < 2; ++which) {
    std::vector<TensorT<T>> in;
    for (const auto& x : inputs) {
      TensorT<T> t = x.defined() ? cast<T>(x) : TensorT<T>();
      if (t.defined()) t.set_requires_grad(true);
      in.push_back(t);
    }
    TensorT<T> y = (which ? reference : mine)(in);
    const TensorT<T> probe = cast<T>(random_tensor(y.shape(), 77, false));
    sum(mul(y, probe)).backward();
    outs[which] = y;
    for (auto& t : in) grads[which].push_back(t.defined() ? t.grad() : TensorT<T>());
  }
  auto diff = [&](const TensorT<T>& a, const TensorT<T>& b) {
    EXPECT_EQ(a.shape(), b.shape());
    double m = 0, s = 1;
    for (int64_t i = 0; i < b.numel(); ++i) s = std::max(s, double(std::abs(b.data()[i])));
    for (int64_t i = 0; i < a.numel(); ++i) m = std::max(m, double(std::abs(a.data()[i] - b.data()[i])));
    return m / s;
  };
  worst = diff(outs[0], outs[1]);
  for (size_t i = 0; i < inputs.size(); ++i)
    if (inputs[i].defined()) worst = std::max(worst, diff(grads[0][i], grads[1][i]));
  return worst;
}

template <typename T>
void check_group_norm(const Shape& nhwc, int groups, bool silu_on, double tol) {
  const int64_t c = nhwc[3];
  const std::vector<TensorD> in = {random_tensor(nhwc, 1, false, 0.3), random_tensor({c}, 2, false, 1.0),
                                   random_tensor({c}, 3, false)};
  const OpT<T> mine = [=](const std::vector<TensorT<T>>& x) { return group_norm_nhwc(x[0], groups, x[1], x[2], 1e-5, silu_on); };
  const OpT<T> ref = [=](const std::vector<TensorT<T>>& x) {
    TensorT<T> y = group_norm(permute(x[0], {0, 3, 1, 2}), groups, x[1], x[2], 1e-5);
    return permute(silu_on ? silu(y) : y, {0, 2, 3, 1});
  };
  EXPECT_LE(worst_difference<T>(mine, ref, in), tol) << nhwc.str() << " groups " << groups << " silu " << silu_on;
}

TEST(FusedOps, GroupNormNhwcMatchesPermutedGroupNormAndSilu) {
  for (int64_t batch : {1, 2, 32, 64, 128}) {
    check_group_norm<float>({batch, 8, 8, 64}, 32, true, 2e-5);
    check_group_norm<float>({batch, 4, 4, 256}, 32, false, 2e-5);
  }
  check_group_norm<float>({3, 5, 7, 12}, 4, true, 2e-5);
  check_group_norm<float>({2, 32, 32, 32}, 32, true, 2e-5);
  check_group_norm<double>({3, 5, 7, 12}, 4, true, 1e-12);
  check_group_norm<double>({2, 4, 4, 64}, 32, false, 1e-12);
}

// One large sample (more than 2^20 values: Stable Diffusion's VAE at batch 1) is split across the threads by
// blocks of pixels; 130² pixels leave a short last block. Against the permuted group_norm, in float and in
// double, and the same bits with 1 and 2 threads.
TEST(FusedOps, GroupNormNhwcOfOneLargeSampleMatchesAndIgnoresTheThreadCount) {
  check_group_norm<float>({1, 130, 130, 64}, 32, true, 2e-5);
  check_group_norm<double>({1, 130, 130, 64}, 32, false, 1e-12);
  const Tensor x = cast<float>(random_tensor({1, 130, 130, 64}, 4, false, 0.3)),
               gamma = cast<float>(random_tensor({64}, 5, false, 1.0)), beta = cast<float>(random_tensor({64}, 6, false));
  const ThreadCountGuard thread_count(1);
  Tensor y[2];
  for (int threads : {1, 2}) {
    set_num_threads(threads);
    y[threads - 1] = group_norm_nhwc(x, 32, gamma, beta, 1e-5, true);
  }
  int64_t differing = 0;
  for (int64_t i = 0; i < y[0].numel(); ++i) differing += y[0].data()[i] != y[1].data()[i];
  EXPECT_EQ(differing, 0);
}

TEST(FusedOps, GegluMatchesChunkGeluMul) {
  for (const Shape& s : {Shape{64, 64, 512}, Shape{3, 7, 38}, Shape{1, 2}}) {
    const OpT<float> mine = [](const std::vector<Tensor>& x) { return geglu(x[0]); };
    const OpT<float> ref = [](const std::vector<Tensor>& x) {
      auto parts = chunk(x[0], 2, -1);
      return mul(parts[0], gelu(parts[1]));
    };
    EXPECT_LE(worst_difference<float>(mine, ref, {random_tensor(s, 4, false)}), 2e-6) << s.str();
  }
}

// layer_norm (forward, and a backward whose row means go through lane_sum) against its definition composed of
// broadcasting ops, (x − μ)/√(σ² + ε)·γ + β, in float at the transformer blocks' widths and odd ones (tails of
// lane_sum's eight partial sums).
TEST(FusedOps, LayerNormMatchesItsComposition) {
  for (const Shape& s : {Shape{32, 64, 64}, Shape{2, 16, 128}, Shape{3, 5, 17}, Shape{4, 3}}) {
    const int64_t dim = s.size(-1);
    const int last = s.rank() - 1;
    const OpT<float> mine = [](const std::vector<Tensor>& x) { return layer_norm(x[0], x[1], x[2], 1e-5); };
    const OpT<float> ref = [last](const std::vector<Tensor>& x) {
      const Tensor centred = sub(x[0], mean(x[0], {last}, true));
      const Tensor var = mean(mul(centred, centred), {last}, true);
      return add(mul(div(centred, sqrt(scale(var, 1.0, 1e-5))), x[1]), x[2]);
    };
    const std::vector<TensorD> in = {random_tensor(s, 21, false, 2.0), random_tensor({dim}, 22, false, 1.0),
                                     random_tensor({dim}, 23, false)};
    EXPECT_LE(worst_difference<float>(mine, ref, in), 1e-5) << s.str();
  }
}

TEST(FusedOps, UpsampleNhwcMatchesNchw) {
  const OpT<float> mine = [](const std::vector<Tensor>& x) { return upsample_nearest2x_nhwc(x[0]); };
  const OpT<float> ref = [](const std::vector<Tensor>& x) {
    return permute(upsample_nearest2x(permute(x[0], {0, 3, 1, 2})), {0, 2, 3, 1});
  };
  for (const Shape& s : {Shape{64, 4, 4, 128}, Shape{2, 3, 5, 7}})
    EXPECT_EQ(worst_difference<float>(mine, ref, {random_tensor(s, 5, false)}), 0.0) << s.str();
}

// The fused float attention kernel against the double reference (Eigen products and softmax_rows): self-
// and cross-attention at the UNet's shapes (8 heads of 8 channels, 64 and 16 tokens, 4 context tokens), the
// autoencoder's single 64-channel head, and odd sizes that leave partial packets. Two backward passes, so that
// the gradients are written by the first and added to by the second; and q = k = v as one tensor.
TEST(FusedOps, AttentionFloatKernelMatchesTheDoubleReference) {
  struct Case { int64_t b, lq, lk, c, cv; int heads; };
  for (const Case& k : {Case{64, 64, 64, 64, 64, 8}, Case{32, 16, 4, 128, 128, 8}, Case{4, 64, 64, 64, 64, 1},
                        Case{3, 5, 17, 6, 9, 3}, Case{2, 33, 1, 4, 4, 2}, Case{1, 7, 40, 16, 32, 2}}) {
    const std::vector<TensorD> in = {random_tensor({k.b, k.lq, k.c}, 11, false), random_tensor({k.b, k.lk, k.c}, 12, false),
                                     random_tensor({k.b, k.lk, k.cv}, 13, false)};
    const int heads = k.heads;
    const bool same = k.lq == k.lk && k.c == k.cv;  // also run as self-attention of the first input alone
    for (bool self : {false, true}) {
    if (self && !same) continue;
    const OpT<float> f = [heads, self](const std::vector<Tensor>& x) {
      return self ? attention(x[0], x[0], x[0], heads) : attention(x[0], x[1], x[2], heads);
    };
    const OpT<double> d = [heads, self](const std::vector<TensorD>& x) {
      return self ? attention(x[0], x[0], x[0], heads) : attention(x[0], x[1], x[2], heads);
    };
    // Run each side in its own type and compare in double.
    auto outputs = [&](auto op, auto tag) {
      using T = decltype(tag);
      std::vector<TensorT<T>> xs;
      for (const auto& x : in) {
        TensorT<T> t = cast<T>(x);
        t.set_requires_grad(true);
        xs.push_back(t);
      }
      TensorT<T> y;
      for (int pass = 0; pass < 2; ++pass) {
        y = op(xs);
        sum(mul(y, cast<T>(random_tensor(y.shape(), 14 + pass, false)))).backward();
      }
      std::vector<TensorD> r{cast<double>(y.detach())};
      for (auto& t : xs)
        if (t.grad().defined()) r.push_back(cast<double>(t.grad()));
      return r;
    };
    const auto got = outputs(f, 0.0f), ref = outputs(d, 0.0);
    for (size_t i = 0; i < got.size(); ++i) {
      double scale = 1, worst = 0;
      for (int64_t e = 0; e < ref[i].numel(); ++e) scale = std::max(scale, std::abs(ref[i].data()[e]));
      for (int64_t e = 0; e < ref[i].numel(); ++e) worst = std::max(worst, std::abs(got[i].data()[e] - ref[i].data()[e]));
      EXPECT_LE(worst / scale, 2e-6) << "tensor " << i << " of b" << k.b << " lq" << k.lq << " lk" << k.lk << " c" << k.c
                                     << (self ? " (self)" : "");
    }
    EXPECT_EQ(got.size(), self ? 2u : 4u);
    }
  }
}

// The no-grad tiled path (GEMMs over 64-query blocks, for long sequences with wide heads: Stable Diffusion's
// 4,096 tokens of 40 or 64 channels) against the double reference, in the current precision: a partial last
// block of queries, key counts that leave partial packets, cross-attention with values wider than the keys,
// and SD1.5's 40-channel heads (8 of them over 320 channels). Checks max |error| / max(1, max |reference|).
void expect_tiled_attention_matches_double(double tol) {
  struct Case { int64_t b, lq, lk, c, cv; int heads; };
  for (const Case& k : {Case{1, 300, 257, 80, 80, 2}, Case{2, 256, 256, 128, 128, 2}, Case{1, 320, 300, 64, 96, 1},
                        Case{1, 300, 300, 320, 320, 8}}) {
    const TensorD q = random_tensor({k.b, k.lq, k.c}, 21, false), kk = random_tensor({k.b, k.lk, k.c}, 22, false),
                  v = random_tensor({k.b, k.lk, k.cv}, 23, false);
    TensorD ref = attention(q, kk, v, k.heads);
    NoGradGuard no_grad;
    const Tensor got = attention(cast<float>(q), cast<float>(kk), cast<float>(v), k.heads);
    double scale = 1, worst = 0;
    for (int64_t e = 0; e < ref.numel(); ++e) scale = std::max(scale, std::abs(ref.data()[e]));
    for (int64_t e = 0; e < ref.numel(); ++e) worst = std::max(worst, std::abs(got.data()[e] - ref.data()[e]));
    EXPECT_LE(worst / scale, tol) << "b" << k.b << " lq" << k.lq << " lk" << k.lk << " c" << k.c << " cv" << k.cv;
  }
}

TEST(FusedOps, TiledNoGradAttentionMatchesTheDoubleReference) {
  PrecisionGuard fp32(Precision::kFp32);
  expect_tiled_attention_matches_double(2e-6);
}

// The same with bf16 operands (the precision knob; Q, K, V and P rounded to bfloat16, products accumulated in
// float32). Bound: 1.5e-2 of the largest value. Rounding an operand to bf16 moves it by at most 2^-9
// relative, so a score moves by about that times its magnitude (up to ~4 here) and P by the same relative
// amount; measured worst 3.7e-3 on these cases (5.0e-3 at SD1.5's 4,096 tokens, bench_unet). A head read
// from the wrong columns or an unnormalised row is off by tens of percent.
TEST(FusedOps, TiledNoGradAttentionInBf16MatchesTheDoubleReference) {
  if (!bf16_supported()) GTEST_SKIP() << "this CPU (or oneDNN's ISA limit) has no native bf16";
  PrecisionGuard bf16(Precision::kBf16);
  expect_tiled_attention_matches_double(1.5e-2);
}

}  // namespace
}  // namespace lcd
