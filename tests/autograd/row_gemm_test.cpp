// The float GEMM kernels (oneDNN matmul plans; linear, linear_lora, conv2d_nhwc, conv2d_nhwc_lora in fp32 and
// bf16) against double references on many shapes: odd sizes, every batch the tools use, the UNet's and the
// autoencoder's layer shapes. Tolerances are elementwise bounds from rounding-error analysis, scaled by the
// same computation on absolute values (|y| ≤ Σ|x||w|): fp32 accumulation gives errors of a few units of
// 2^-24 per term, bf16 operands at most 2^-8 per rounded operand (up to four roundings on a LoRA path). A
// wrong weight, a missing term or a misplaced row is an O(1) error and fails by orders of magnitude.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>

#include "autograd/batch_parallel.h"
#include "autograd/cpu/bf16.h"
#include "autograd/cpu/convolution.h"
#include "autograd/cpu/matmul.h"
#include "autograd/cpu/precision.h"
#include "autograd/gradcheck.h"
#include "autograd/lora_merge.h"
#include "autograd/ops.h"
#include "autograd/random.h"
#include "autograd/tape.h"
#include "autograd/threads.h"

namespace lcd {
namespace {

constexpr double kFp32Tol = 3e-5;           // relative to the absolute-value result
constexpr double kBf16Tol = 4.0 / 256.0;    // four bf16 roundings of 2^-8 each

std::vector<Precision> precisions() {
  std::vector<Precision> p{Precision::kFp32};
  if (bf16_supported()) p.push_back(Precision::kBf16);
  return p;
}

double tolerance(Precision p) { return p == Precision::kBf16 ? kBf16Tol : kFp32Tol; }

// ---- the matmul engine ----

struct MatCase {
  int64_t m, k, n;
  bool a_transposed, b_transposed, packed, accumulate, bias;
};

TEST(MatmulPlan, MatchesDoubleOnManyShapesAndLayouts) {
  const std::vector<MatCase> cases = {
      {1, 1, 1, false, false, false, false, false},  {7, 3, 5, false, true, false, true, true},
      {33, 17, 64, true, false, false, false, true}, {256, 576, 64, false, true, true, false, true},
      {100, 64, 512, false, true, true, true, false}, {16, 300, 16, true, false, false, true, false},
      {64, 2304, 128, false, true, true, false, true}, {5, 16, 3, true, true, false, false, false},
      {256, 64, 24, false, false, true, true, true},  {13, 1152, 7, true, false, false, false, false}};
  Rng rng(5);
  for (Precision p : precisions()) {
    const cpu::DType t = p == Precision::kBf16 ? cpu::DType::kBf16 : cpu::DType::kF32;
    for (const MatCase& c : cases) {
      // Values exactly representable in the operand type, so the double reference sees the same operands.
      auto values = [&](int64_t n) {
        std::vector<float> v(n);
        for (auto& x : v) x = static_cast<float>(rng.normal());
        if (t == cpu::DType::kBf16)
          for (auto& x : v) x = cpu::from_bf16(cpu::to_bf16(x));
        return v;
      };
      const std::vector<float> a = values(c.m * c.k), b = values(c.k * c.n), bias = values(c.n), c0 = values(c.m * c.n);
      // Storage orders: A (m, k) row-major or its transpose stored (k, m); likewise B.
      auto a_at = [&](int64_t i, int64_t j) { return double(c.a_transposed ? a[j * c.m + i] : a[i * c.k + j]); };
      auto b_at = [&](int64_t i, int64_t j) { return double(c.b_transposed ? b[j * c.k + i] : b[i * c.n + j]); };
      auto store = [&](const std::vector<float>& v) {
        std::vector<cpu::bf16> h(v.size());
        cpu::to_bf16(v.data(), h.data(), static_cast<int64_t>(v.size()));
        return h;
      };
      const std::vector<cpu::bf16> ah = store(a), bh = store(b);
      const void* a_op = t == cpu::DType::kBf16 ? static_cast<const void*>(ah.data()) : a.data();
      const void* b_op = t == cpu::DType::kBf16 ? static_cast<const void*>(bh.data()) : b.data();
      const cpu::Layout la = c.a_transposed ? cpu::Layout::transposed(c.m, c.k, t) : cpu::Layout::row_major(c.m, c.k, t);
      const cpu::Layout lb = c.b_transposed ? cpu::Layout::transposed(c.k, c.n, t) : cpu::Layout::row_major(c.k, c.n, t);
      const cpu::MatmulSpec spec{la, lb, c.n, c.accumulate, c.bias};
      std::vector<float> out = c0;
      if (c.packed) {
        const cpu::PackedMatrix pb(b.data(), cpu::Layout{c.k, c.n, c.b_transposed ? 1 : c.n, c.b_transposed ? c.k : 1,
                                                          cpu::DType::kF32}, t);
        cpu::MatmulPlan(spec, pb).run(a_op, nullptr, out.data(), c.bias ? bias.data() : nullptr);
      } else {
        cpu::MatmulPlan(spec).run(a_op, b_op, out.data(), c.bias ? bias.data() : nullptr);
      }
      for (int64_t i = 0; i < c.m; ++i)
        for (int64_t j = 0; j < c.n; ++j) {
          double ref = (c.accumulate ? c0[i * c.n + j] : 0.0) + (c.bias ? bias[j] : 0.0), abs = std::abs(ref);
          for (int64_t q = 0; q < c.k; ++q) {
            ref += a_at(i, q) * b_at(q, j);
            abs += std::abs(a_at(i, q) * b_at(q, j));
          }
          ASSERT_NEAR(out[i * c.n + j], ref, kFp32Tol * abs + 1e-30)
              << precision_name(p) << " m" << c.m << " k" << c.k << " n" << c.n << " at (" << i << ", " << j << ")";
        }
    }
  }
}

// ---- the layer ops ----

// One op application: inputs in double (the reference) or float (the kernels), output and every gradient of
// sum(y ⊙ probe), all returned in double.
using OpD = std::function<TensorD(const std::vector<TensorD>&, double)>;
using OpF = std::function<Tensor(const std::vector<Tensor>&, double)>;

struct Run {
  TensorD y;
  std::vector<TensorD> grads;
};

template <typename T, typename Op>
Run run(const Op& op, const std::vector<TensorD>& inputs, const TensorD& probe, double scale) {
  std::vector<TensorT<T>> in;
  for (const TensorD& x : inputs) {
    if (!x.defined()) {
      in.emplace_back();
      continue;
    }
    TensorT<T> t = cast<T>(x);
    t.set_requires_grad(true);
    in.push_back(t);
  }
  TensorT<T> y = op(in, scale);
  sum(mul(y, cast<T>(probe))).backward();
  Run r{cast<double>(y.detach()), {}};
  for (const auto& t : in) r.grads.push_back(t.defined() ? cast<double>(t.grad()) : TensorD());
  return r;
}

std::vector<TensorD> absolute(const std::vector<TensorD>& xs) {
  std::vector<TensorD> out;
  for (const TensorD& x : xs) {
    if (!x.defined()) {
      out.emplace_back();
      continue;
    }
    TensorD a = x.clone();
    for (int64_t i = 0; i < a.numel(); ++i) a.data()[i] = std::abs(a.data()[i]);
    out.push_back(a);
  }
  return out;
}

// Compares the float op (each precision) with the double op on `inputs`, elementwise within
// tolerance · (the double op on absolute values) + a floor far below any real error.
// With in_part, the float op runs twice inside one part of a batch-parallel pass, where its chunks run in
// turn on one thread and share that thread's buffers (grown by the first run, as in a step loop).
void expect_matches_reference(const OpD& op_d, const OpF& op_f, const std::vector<TensorD>& inputs,
                              const Shape& out_shape, double scale, const std::string& label, bool in_part = false) {
  const TensorD probe = random_tensor(out_shape, 99, false);
  const Run ref = run<double>(op_d, inputs, probe, scale);
  const Run bound = run<double>(op_d, absolute(inputs), absolute({probe})[0], std::abs(scale));
  const char* names[] = {"x", "weight", "bias", "down", "up"};
  for (Precision p : precisions()) {
    PrecisionGuard guard(p);
    Run got;
    if (in_part)
      for_each_part(32, [&](int64_t begin, int64_t) {
        if (begin != 0) return;
        run<float>(op_f, inputs, probe, scale);  // a first step grows the thread's buffers, as in a step loop
        got = run<float>(op_f, inputs, probe, scale);
      });
    else
      got = run<float>(op_f, inputs, probe, scale);
    ASSERT_TRUE(got.y.defined()) << label;
    auto compare = [&](const TensorD& a, const TensorD& b, const TensorD& abs, const std::string& what) {
      ASSERT_EQ(a.shape(), b.shape()) << label << " " << what;
      for (int64_t i = 0; i < a.numel(); ++i)
        ASSERT_NEAR(a.data()[i], b.data()[i], tolerance(p) * abs.data()[i] + 1e-9)
            << label << ", " << precision_name(p) << ", " << what << " element " << i << " of " << a.shape().str();
    };
    compare(got.y, ref.y, bound.y, "output");
    for (size_t i = 0; i < inputs.size(); ++i)
      if (inputs[i].defined()) compare(got.grads[i], ref.grads[i], bound.grads[i], std::string("gradient of ") + names[i]);
  }
}

struct LinearCase {
  int64_t rows, in, out, rank;
  bool bias;
};

TEST(RowGemmKernels, LinearAndLinearLoraMatchDouble) {
  const std::vector<LinearCase> cases = {{1, 1, 1, 0, true},     {7, 3, 5, 1, false},     {33, 17, 64, 2, true},
                                         {300, 64, 130, 16, true}, {4096, 64, 512, 16, false}, {257, 256, 64, 16, true},
                                         {64, 256, 128, 4, true},  {2048, 64, 64, 0, false}};
  uint64_t seed = 1000;
  for (const LinearCase& c : cases) {
    std::vector<TensorD> in = {random_tensor({c.rows, c.in}, seed++, false), random_tensor({c.out, c.in}, seed++, false),
                               c.bias ? random_tensor({c.out}, seed++, false) : TensorD()};
    const std::string label = "linear rows " + std::to_string(c.rows) + " in " + std::to_string(c.in) + " out " +
                              std::to_string(c.out) + " rank " + std::to_string(c.rank);
    if (c.rank == 0) {
      expect_matches_reference([](const std::vector<TensorD>& x, double) { return linear(x[0], x[1], x[2]); },
                               [](const std::vector<Tensor>& x, double) { return linear(x[0], x[1], x[2]); }, in,
                               {c.rows, c.out}, 1.0, label);
      continue;
    }
    in.push_back(random_tensor({c.rank, c.in}, seed++, false));
    in.push_back(random_tensor({c.out, c.rank}, seed++, false));
    expect_matches_reference(
        [](const std::vector<TensorD>& x, double s) { return linear_lora(x[0], x[1], x[2], x[3], x[4], s); },
        [](const std::vector<Tensor>& x, double s) { return linear_lora(x[0], x[1], x[2], x[3], x[4], s); }, in,
        {c.rows, c.out}, -0.75, label);
  }
}

struct ConvCase {
  int64_t n, h, w, cin, cout, k;
  Conv2dOptions o;
  int64_t rank;
};

std::vector<ConvCase> conv_cases() {
  return {
      {1, 1, 1, 1, 1, 1, {1, 0}, 0},        {3, 5, 7, 4, 6, 3, {1, 1}, 2},      {2, 8, 8, 64, 64, 3, {2, 0, 1}, 16},
      {32, 8, 8, 64, 64, 3, {1, 1}, 16},    {64, 4, 4, 256, 128, 3, {1, 1}, 16}, {128, 8, 8, 4, 64, 3, {1, 1}, 0},
      {2, 32, 32, 32, 1, 3, {1, 1}, 0},      {64, 8, 8, 192, 64, 1, {1, 0}, 16}, {5, 6, 5, 3, 7, 3, {2, 1}, 3},
      {1, 9, 9, 8, 4, 1, {2, 0}, 1},
  };
}

void expect_conv_cases_match(bool in_part) {
  uint64_t seed = 2000;
  for (const ConvCase& c : conv_cases()) {
    const int64_t ho = (c.h + 2 * c.o.padding + c.o.extra_pad_end - c.k) / c.o.stride + 1;
    const int64_t wo = (c.w + 2 * c.o.padding + c.o.extra_pad_end - c.k) / c.o.stride + 1;
    std::vector<TensorD> in = {random_tensor({c.n, c.h, c.w, c.cin}, seed++, false),
                               random_tensor({c.cout, c.cin, c.k, c.k}, seed++, false),
                               random_tensor({c.cout}, seed++, false)};
    const std::string label = "conv n" + std::to_string(c.n) + " " + std::to_string(c.h) + "x" + std::to_string(c.w) +
                              " cin " + std::to_string(c.cin) + " cout " + std::to_string(c.cout) + " k" +
                              std::to_string(c.k) + " stride " + std::to_string(c.o.stride) + " rank " +
                              std::to_string(c.rank);
    const Conv2dOptions o = c.o;
    if (c.rank == 0) {
      expect_matches_reference([o](const std::vector<TensorD>& x, double) { return conv2d_nhwc(x[0], x[1], x[2], o); },
                               [o](const std::vector<Tensor>& x, double) { return conv2d_nhwc(x[0], x[1], x[2], o); },
                               in, {c.n, ho, wo, c.cout}, 1.0, label, in_part);
      continue;
    }
    in.push_back(random_tensor({c.rank, c.cin, c.k, c.k}, seed++, false));
    in.push_back(random_tensor({c.cout, c.rank, 1, 1}, seed++, false));
    expect_matches_reference(
        [o](const std::vector<TensorD>& x, double s) { return conv2d_nhwc_lora(x[0], x[1], x[2], x[3], x[4], s, o); },
        [o](const std::vector<Tensor>& x, double s) { return conv2d_nhwc_lora(x[0], x[1], x[2], x[3], x[4], s, o); },
        in, {c.n, ho, wo, c.cout}, 0.6, label, in_part);
  }
}

TEST(RowGemmKernels, Conv2dNhwcAndLoraMatchDouble) { expect_conv_cases_match(false); }

// Inside a batch part the chunks of a layer (here up to 8: 2,048 rows of up to 2,304 values) run in turn on
// one thread, reusing its buffers from chunk to chunk.
TEST(RowGemmKernels, Conv2dNhwcAndLoraMatchDoubleInsideABatchPart) { expect_conv_cases_match(true); }

// A weight used by two convolutions of one graph: the second gradient (GEMM partials in patch order) is added
// to the first, with input channel counts of whole packet groups, groups plus a tail, and a tail alone.
TEST(RowGemmKernels, ConvWeightGradientsAccumulateOverTwoUses) {
  struct Case {
    int64_t cin, cout, k;
  };
  uint64_t seed = 2500;
  for (const Case& c : {Case{40, 24, 3}, Case{64, 3, 3}, Case{7, 5, 3}, Case{33, 16, 2}}) {
    const Conv2dOptions o{1, static_cast<int>(c.k / 2)};
    const int64_t ho = 6 + 2 * o.padding - c.k + 1;
    const std::vector<TensorD> in = {random_tensor({2, 6, 6, c.cin}, seed++, false),
                                     random_tensor({c.cout, c.cin, c.k, c.k}, seed++, false),
                                     random_tensor({c.cout}, seed++, false)};
    expect_matches_reference(
        [o](const std::vector<TensorD>& x, double) {
          return add(conv2d_nhwc(x[0], x[1], x[2], o), conv2d_nhwc(mul(x[0], x[0]), x[1], x[2], o));
        },
        [o](const std::vector<Tensor>& x, double) {
          return add(conv2d_nhwc(x[0], x[1], x[2], o), conv2d_nhwc(mul(x[0], x[0]), x[1], x[2], o));
        },
        in, {2, ho, ho, c.cout}, 1.0, "conv used twice, cin " + std::to_string(c.cin) + " k" + std::to_string(c.k));
  }
}

// The double channels-last path against the independent NCHW conv2d (im2col in channel-major order).
TEST(RowGemmKernels, Conv2dNhwcEqualsNchwConvInDouble) {
  uint64_t seed = 3000;
  for (const ConvCase& c : conv_cases()) {
    if (c.n * c.h * c.w * c.cin > 200000) continue;
    const TensorD x = random_tensor({c.n, c.h, c.w, c.cin}, seed++, false);
    const TensorD w = random_tensor({c.cout, c.cin, c.k, c.k}, seed++, false);
    const TensorD b = random_tensor({c.cout}, seed++, false);
    const TensorD a = random_tensor({2, c.cin, c.k, c.k}, seed++, false);
    const TensorD up = random_tensor({c.cout, 2, 1, 1}, seed++, false);
    TensorD mine = conv2d_nhwc_lora(x, w, b, a, up, 0.3, c.o);
    TensorD theirs = permute(conv2d_lora(permute(x, {0, 3, 1, 2}), w, b, a, up, 0.3, c.o), {0, 2, 3, 1});
    ASSERT_EQ(mine.shape(), theirs.shape());
    for (int64_t i = 0; i < mine.numel(); ++i) ASSERT_NEAR(mine.data()[i], theirs.data()[i], 1e-12 * (1 + std::abs(theirs.data()[i])));
  }
}

// run() gives the same values, bit for bit, with 1, 2 and again 1 thread, in every precision.
void expect_same_with_one_and_two_threads(const std::function<std::vector<float>()>& run) {
  const ThreadCountGuard thread_count(1);
  for (Precision p : precisions()) {
    PrecisionGuard guard(p);
    std::vector<std::vector<float>> results;
    for (int threads : {1, 2, 1}) {
      set_num_threads(threads);
      results.push_back(run());
    }
    EXPECT_EQ(results[0], results[1]) << precision_name(p);
    EXPECT_EQ(results[0], results[2]) << precision_name(p);
  }
}

// y's values followed by each input's gradient.
std::vector<float> values_and_gradients(const Tensor& y, std::initializer_list<const Tensor*> inputs) {
  std::vector<float> all(y.data(), y.data() + y.numel());
  for (const Tensor* t : inputs) all.insert(all.end(), t->grad().data(), t->grad().data() + t->numel());
  return all;
}

// Chunks depend on the shapes only, and weight gradients are summed per chunk in order: one and two threads
// give bit-identical results, in every precision.
TEST(RowGemmKernels, ResultsDoNotDependOnTheThreadCount) {
  Rng rng(7);
  const Tensor x0 = rng.normal_tensor({32, 8, 8, 64}), w = rng.normal_tensor({64, 64, 3, 3}), b = rng.normal_tensor({64});
  const Tensor a0 = rng.normal_tensor({16, 64, 3, 3}), up0 = rng.normal_tensor({64, 16, 1, 1});
  expect_same_with_one_and_two_threads([&] {
    Tensor x = x0.clone(), a = a0.clone(), up = up0.clone();
    for (Tensor* t : {&x, &a, &up}) t->set_requires_grad(true);
    Tensor y = conv2d_nhwc_lora(x, w, b, a, up, 0.5, Conv2dOptions{1, 1});
    sum(mul(y, y)).backward();
    return values_and_gradients(y, {&x, &a, &up});
  });
}

// The forward of a k×k convolution with nothing to save runs as a direct convolution (autograd/cpu/convolution.h):
// no tape, a frozen module weight, with and without a LoRA branch (then on the merged W + sB·A), against the
// double reference. The conv cases above cover the same path with a trainable weight (then reordered per call).
TEST(RowGemmKernels, NoGradConvolutionsMatchDouble) {
  std::vector<ConvCase> cases = conv_cases();
  cases.push_back({2, 33, 31, 32, 48, 3, {2, 0, 1}, 4});  // a VAE-style downsample: end padding only
  cases.push_back({1, 64, 64, 64, 32, 3, {1, 1}, 8});
  uint64_t seed = 5000;
  for (const ConvCase& c : cases) {
    const Conv2dOptions o = c.o;
    const TensorD x = random_tensor({c.n, c.h, c.w, c.cin}, seed++, false);
    const TensorD w = random_tensor({c.cout, c.cin, c.k, c.k}, seed++, false), b = random_tensor({c.cout}, seed++, false);
    const TensorD down = c.rank ? random_tensor({c.rank, c.cin, c.k, c.k}, seed++, false) : TensorD();
    const TensorD up = c.rank ? random_tensor({c.cout, c.rank, 1, 1}, seed++, false) : TensorD();
    auto op = [&](auto xx, auto ww, auto bb, auto dd, auto uu) {
      return c.rank ? conv2d_nhwc_lora(xx, ww, bb, dd, uu, 0.6, o) : conv2d_nhwc(xx, ww, bb, o);
    };
    const TensorD ref = op(x, w, b, down, up);
    const TensorD bound = op(absolute({x})[0], absolute({w})[0], absolute({b})[0], c.rank ? absolute({down})[0] : down,
                             c.rank ? absolute({up})[0] : up);
    for (Precision p : precisions()) {
      PrecisionGuard guard(p);
      NoGradGuard no_grad;
      Tensor wf = cast<float>(w);
      wf.impl()->packable = true;  // as a module parameter
      const Tensor got = op(cast<float>(x), wf, cast<float>(b), c.rank ? cast<float>(down) : Tensor(),
                            c.rank ? cast<float>(up) : Tensor());
      for (int pass = 0; pass < 2; ++pass) {  // the second call reuses the kept weights
        const TensorD y = cast<double>(pass ? op(cast<float>(x), wf, cast<float>(b), c.rank ? cast<float>(down) : Tensor(),
                                                 c.rank ? cast<float>(up) : Tensor())
                                            : got);
        ASSERT_EQ(y.shape(), ref.shape());
        for (int64_t i = 0; i < y.numel(); ++i)
          ASSERT_NEAR(y.data()[i], ref.data()[i], tolerance(p) * bound.data()[i] + 1e-9)
              << "conv n" << c.n << " " << c.h << "x" << c.w << " cin " << c.cin << " cout " << c.cout << " rank "
              << c.rank << ", " << precision_name(p) << ", pass " << pass << ", element " << i;
      }
    }
  }
  // oneDNN offers a direct NHWC kernel for the UNet's 3×3 shapes on every CPU lcdkit runs on (AVX2 and up).
  EXPECT_TRUE(cpu::ConvPlan(cpu::ConvSpec{2, 16, 16, 64, 64, 3, 3, 1, 1, 16, 16, cpu::DType::kF32, true}).available());
}

// The direct convolution splits a layer among oneDNN's threads; each output's sum runs in one thread in a
// fixed order, so one and two threads give bit-identical outputs.
TEST(RowGemmKernels, DirectConvolutionResultsDoNotDependOnTheThreadCount) {
  Rng rng(17);
  const Tensor x = rng.normal_tensor({2, 40, 40, 64}), b = rng.normal_tensor({96});
  Tensor w = rng.normal_tensor({96, 64, 3, 3});
  w.impl()->packable = true;
  expect_same_with_one_and_two_threads([&] {
    NoGradGuard no_grad;
    const Tensor y = conv2d_nhwc(x, w, b, Conv2dOptions{1, 1});
    return std::vector<float>(y.data(), y.data() + y.numel());
  });
}

// fp32 forwards of 3×3 stride-1 layers on large images run as Winograd F(4×4, 3×3) in bands of rows: one
// band (the whole image), two (top and bottom) and several (with middle bands), with its limits lowered so
// that small images take that path and are cut, against the double reference at the fp32 tolerance (its
// transforms round a few more times than the direct kernel: measured 1–2× its error), with a LoRA branch
// merged as in inference, and bit-identical with one and two threads.
TEST(RowGemmKernels, WinogradBandsMatchDoubleAndDoNotDependOnTheThreadCount) {
  struct Case {
    int64_t n, h, w, cin, cout, budget, bands;
  };
  const Case cases[] = {{2, 36, 32, 32, 40, int64_t(1) << 21, 1},
                        {1, 32, 48, 40, 32, 16 * 48 * 40, 2},
                        {2, 40, 36, 48, 32, 8 * 2 * 36 * 48, 5}};
  uint64_t seed = 7000;
  for (const Case& c : cases) {
    cpu::set_winograd_limits({1024, c.budget});
    const cpu::ConvPlan plan(cpu::ConvSpec{c.n, c.h, c.w, c.cin, c.cout, 3, 3, 1, 1, c.h, c.w, cpu::DType::kF32, true});
    const std::string kernel = plan.kernel();
    const bool winograd = kernel.rfind("jit_wino_4x3", 0) == 0;
    if (!winograd) {  // a CPU without AVX-512: the direct kernel (covered above)
      cpu::set_winograd_limits({});
      GTEST_SKIP() << "no Winograd kernel here: " << kernel;
    }
    EXPECT_EQ(kernel.find(" bands") != std::string::npos, c.bands > 1) << kernel;
    if (c.bands > 1) {
      EXPECT_NE(kernel.find(" in " + std::to_string(c.bands) + " bands"), std::string::npos) << kernel;
    }
    const TensorD x = random_tensor({c.n, c.h, c.w, c.cin}, seed++, false);
    const TensorD w = random_tensor({c.cout, c.cin, 3, 3}, seed++, false), b = random_tensor({c.cout}, seed++, false);
    const TensorD down = random_tensor({4, c.cin, 3, 3}, seed++, false), up = random_tensor({c.cout, 4, 1, 1}, seed++, false);
    const Conv2dOptions o{1, 1};
    const TensorD ref = conv2d_nhwc_lora(x, w, b, down, up, 0.6, o);
    const TensorD bound = conv2d_nhwc_lora(absolute({x})[0], absolute({w})[0], absolute({b})[0], absolute({down})[0],
                                           absolute({up})[0], 0.6, o);
    PrecisionGuard guard(Precision::kFp32);
    Tensor wf = cast<float>(w);
    wf.impl()->packable = true;  // as a module parameter: the merged weight is cached, the forward is direct
    auto run = [&] {
      NoGradGuard no_grad;
      const Tensor y = conv2d_nhwc_lora(cast<float>(x), wf, cast<float>(b), cast<float>(down), cast<float>(up), 0.6, o);
      return std::vector<float>(y.data(), y.data() + y.numel());
    };
    const std::vector<float> got = run();
    ASSERT_EQ(static_cast<int64_t>(got.size()), ref.numel());
    for (int64_t i = 0; i < ref.numel(); ++i)
      ASSERT_NEAR(got[i], ref.data()[i], kFp32Tol * bound.data()[i] + 1e-9) << kernel << ", element " << i;
    expect_same_with_one_and_two_threads(run);
  }
  cpu::set_winograd_limits({});
}

// Inside batch parts, a trained k×k weight's gradient comes from the direct backward-weights convolution
// (fp32), run on the part's own thread: each part's ∂W, ∂b and ∂x are bit-identical with one and two threads.
TEST(RowGemmKernels, WeightGradientsInsideBatchPartsDoNotDependOnTheThreadCount) {
  Rng rng(19);
  const Tensor x0 = rng.normal_tensor({32, 8, 8, 64}), w0 = rng.normal_tensor({64, 64, 3, 3});
  const Tensor b0 = rng.normal_tensor({64});
  expect_same_with_one_and_two_threads([&] {
    const BatchParts parts = batch_parts(32);
    std::vector<std::vector<float>> per_part(parts.count);
    for_each_part(32, [&](int64_t begin, int64_t count) {
      Tensor x = slice(x0, 0, begin, count).clone(), w = w0.clone(), b = b0.clone();
      for (Tensor* t : {&x, &w, &b}) t->set_requires_grad(true);
      Tensor y = conv2d_nhwc(x, w, b, Conv2dOptions{1, 1});
      sum(mul(y, y)).backward();
      per_part[begin / parts.size] = values_and_gradients(y, {&x, &w, &b});
    });
    std::vector<float> joined;
    for (const auto& part : per_part) joined.insert(joined.end(), part.begin(), part.end());
    return joined;
  });
}

// A frozen weight is packed once and the pack follows its values: writing the weight (non-const data())
// invalidates it.
TEST(RowGemmKernels, PackedWeightsFollowWritesToTheWeight) {
  Rng rng(8);
  Tensor x = rng.normal_tensor({4, 5, 5, 8}), w = rng.normal_tensor({6, 8, 3, 3});
  w.impl()->packable = true;  // as a module parameter
  const Tensor before = conv2d_nhwc(x, w, Tensor(), Conv2dOptions{1, 1});
  for (int64_t i = 0; i < w.numel(); ++i) w.data()[i] *= 2.0f;
  const Tensor after = conv2d_nhwc(x, w, Tensor(), Conv2dOptions{1, 1});
  for (int64_t i = 0; i < after.numel(); ++i) ASSERT_NEAR(after.data()[i], 2.0f * before.data()[i], 1e-4f * (1 + std::abs(after.data()[i])));
  // A tensor that is not a module parameter (an EMA copy written through another alias) is never packed.
  Tensor alias = Tensor::from_storage(w.shape(), w.storage());
  const Tensor third = conv2d_nhwc(x, alias, Tensor(), Conv2dOptions{1, 1});
  for (int64_t i = 0; i < w.numel(); ++i) w.storage().get()[i] *= 0.5f;  // behind the alias's back
  const Tensor fourth = conv2d_nhwc(x, alias, Tensor(), Conv2dOptions{1, 1});
  for (int64_t i = 0; i < fourth.numel(); ++i) ASSERT_NEAR(fourth.data()[i], 0.5f * third.data()[i], 1e-4f * (1 + std::abs(third.data()[i])));
}

// A frozen module weight's merged form W + sB·A, which a LoRA layer's output and input gradient use, follows
// every change of the factors, also when they are written in place behind their tensors' back (as an
// optimizer writes its flat buffer): each step's output and gradients match the double reference on that
// step's values.
TEST(RowGemmKernels, MergedLoraWeightFollowsTheFactors) {
  const Conv2dOptions o{1, 1};
  const double s = 0.5;
  const TensorD x = random_tensor({4, 6, 6, 16}, 90, false), probe = random_tensor({4, 6, 6, 8}, 91, false);
  TensorD down = random_tensor({4, 16, 3, 3}, 92, false), up = random_tensor({8, 4, 1, 1}, 93, false);
  Tensor w = cast<float>(random_tensor({8, 16, 3, 3}, 94, false)), b = cast<float>(random_tensor({8}, 95, false));
  w.impl()->packable = true;  // as a module parameter
  Tensor down_f = cast<float>(down), up_f = cast<float>(up);
  down_f.set_requires_grad(true);
  up_f.set_requires_grad(true);
  for (Precision p : precisions()) {
    PrecisionGuard guard(p);
    for (int step = 0; step < 3; ++step) {
      const std::vector<TensorD> in = {x, cast<double>(w), cast<double>(b), down, up};
      const OpD op_d = [o](const std::vector<TensorD>& v, double sc) { return conv2d_nhwc_lora(v[0], v[1], v[2], v[3], v[4], sc, o); };
      const lcd::Run ref = run<double>(op_d, in, probe, s), bound = run<double>(op_d, absolute(in), absolute({probe})[0], s);
      Tensor xf = cast<float>(x);
      xf.set_requires_grad(true);
      down_f.impl()->grad.reset();
      up_f.impl()->grad.reset();
      const Tensor y = conv2d_nhwc_lora(xf, w, b, down_f, up_f, s, o);
      sum(mul(y, cast<float>(probe))).backward();
      auto expect_near = [&](const Tensor& got_f, const TensorD& want, const TensorD& abs, const char* what) {
        const TensorD got = cast<double>(got_f);
        ASSERT_EQ(got.shape(), want.shape()) << what;
        for (int64_t i = 0; i < got.numel(); ++i)
          ASSERT_NEAR(got.data()[i], want.data()[i], tolerance(p) * abs.data()[i] + 1e-9)
              << precision_name(p) << " step " << step << " " << what << " element " << i;
      };
      expect_near(y.detach(), ref.y, bound.y, "output");
      expect_near(xf.grad(), ref.grads[0], bound.grads[0], "gradient of x");
      expect_near(down_f.grad(), ref.grads[3], bound.grads[3], "gradient of down");
      expect_near(up_f.grad(), ref.grads[4], bound.grads[4], "gradient of up");
      // The next step's factors, written in place into the same storage.
      for (int64_t i = 0; i < down.numel(); ++i) down.data()[i] = -0.5 * down.data()[i] + 0.01 * (i % 7);
      for (int64_t i = 0; i < up.numel(); ++i) up.data()[i] = 1.5 * up.data()[i] - 0.02 * (i % 5);
      for (int64_t i = 0; i < down.numel(); ++i) down_f.storage().get()[i] = static_cast<float>(down.data()[i]);
      for (int64_t i = 0; i < up.numel(); ++i) up_f.storage().get()[i] = static_cast<float>(up.data()[i]);
    }
  }
}

// An LCD step evaluates one network twice: the target without a tape, the student with one. Their difference
// is the loss's signal, so a LoRA layer's no-grad forward must compute what its training forward computes, to
// float32 accuracy, in every precision: in bf16 a forward on the merged W + sB·A (rounded as one weight) would
// differ from W's rounding plus the branch by ~2⁻⁹ of the layer's output (measured at a trained Fashion-MNIST
// adapter: the bf16 LCD gradient's cosine to fp32's was −0.19–0.44 with a merged target, 0.69–0.93 without).
// Factors at 1/8 of W's scale, as a trained adapter's are.
TEST(RowGemmKernels, NoGradLoraForwardComputesTheTrainingForward) {
  const Conv2dOptions o{1, 1};
  const double s = 0.5;
  Rng rng(41);
  struct Layer {
    Shape x, w, down, up;
    bool conv;
  };
  const std::vector<Layer> layers = {{{4, 8, 8, 32}, {48, 32, 3, 3}, {16, 32, 3, 3}, {48, 16, 1, 1}, true},
                                     {{2, 5, 7, 24}, {16, 24, 1, 1}, {4, 24, 1, 1}, {16, 4, 1, 1}, true},
                                     {{130, 64}, {96, 64}, {16, 64}, {96, 16}, false}};
  for (const Layer& l : layers) {
    const Tensor x = rng.normal_tensor(l.x), b = rng.normal_tensor({l.w[0]});
    Tensor w = rng.normal_tensor(l.w);
    w.impl()->packable = true;  // a frozen module parameter
    Tensor down = scale(rng.normal_tensor(l.down), 0.125), up = scale(rng.normal_tensor(l.up), 0.125);
    down.set_requires_grad(true);
    up.set_requires_grad(true);
    auto layer = [&](const Tensor& xx, const Tensor& ww, const Tensor& bb, const Tensor& dd, const Tensor& uu) {
      return l.conv ? conv2d_nhwc_lora(xx, ww, bb, dd, uu, s, o) : linear_lora(xx, ww, bb, dd, uu, s);
    };
    Tensor bound;  // Σ|x||w| + |b| + s·Σ|x||A||B|: the scale of each output's rounding error
    {
      NoGradGuard no_grad;
      PrecisionGuard fp32(Precision::kFp32);
      bound = layer(abs(x), abs(w), abs(b), abs(down), abs(up));
    }
    for (Precision p : precisions()) {
      PrecisionGuard guard(p);
      const Tensor trained = layer(x, w, b, down, up).detach();
      Tensor untaped;
      {
        NoGradGuard no_grad;
        untaped = layer(x, w, b, down, up);
      }
      ASSERT_EQ(untaped.shape(), trained.shape());
      for (int64_t i = 0; i < trained.numel(); ++i)
        ASSERT_NEAR(untaped.data()[i], trained.data()[i], kFp32Tol * bound.data()[i])
            << precision_name(p) << (l.conv ? " conv " : " linear ") << l.w.str() << " output " << i;
    }
  }
}

// merge_lora_ahead forms, for new factor values, the merged forms a layer was asked for under the old ones,
// and a pass then reads them: its outputs and input gradients are bit for bit those of a weight that was
// never merged ahead (same values, formed on demand). Factors written after the merge ahead are still
// followed (its forms no longer match them).
TEST(RowGemmKernels, MergedFormsMadeAheadMatchThoseMadeOnDemand) {
  const Conv2dOptions o{1, 1};
  const double s = 0.75;
  Rng rng(40);
  const Tensor x_conv = rng.normal_tensor({4, 6, 6, 16}), x_lin = rng.normal_tensor({10, 24});
  struct Layer {
    Tensor w, down, up;
    bool conv;
  };
  std::vector<Layer> layers = {{rng.normal_tensor({8, 16, 3, 3}), rng.normal_tensor({4, 16, 3, 3}), rng.normal_tensor({8, 4, 1, 1}), true},
                               {rng.normal_tensor({12, 24}), rng.normal_tensor({4, 24}), rng.normal_tensor({12, 4}), false}};
  auto run_layer = [&](const Tensor& w, const Layer& l, bool grad, Tensor* dx) {
    Tensor x = (l.conv ? x_conv : x_lin).clone();
    x.set_requires_grad(grad);
    Tensor y = l.conv ? conv2d_nhwc_lora(x, w, Tensor(), l.down, l.up, s, o) : linear_lora(x, w, Tensor(), l.down, l.up, s);
    if (grad) {
      sum(mul(y, y)).backward();
      *dx = x.grad();
    }
    return y.detach();
  };
  auto rewrite_factors = [&](float factor) {
    for (Layer& l : layers) {
      for (int64_t i = 0; i < l.down.numel(); ++i) l.down.storage().get()[i] *= factor;
      for (int64_t i = 0; i < l.up.numel(); ++i) l.up.storage().get()[i] += 0.125f * factor;
    }
  };
  for (Precision p : precisions()) {
    PrecisionGuard guard(p);
    for (Layer& l : layers) {
      l.w = l.w.clone();
      l.w.impl()->packable = true;  // as module parameters
      l.down.set_requires_grad(true);
      l.up.set_requires_grad(true);
    }
    // Two sets of factors before: with each, a no-grad pass and a pass with an input gradient ask for their
    // merged forms.
    for (int before = 0; before < 2; ++before) {
      if (before) rewrite_factors(0.75f);
      for (const Layer& l : layers) {
        NoGradGuard no_grad;
        run_layer(l.w, l, false, nullptr);
      }
      for (const Layer& l : layers) {
        Tensor dx;
        run_layer(l.w, l, true, &dx);
      }
    }
    for (int round = 0; round < 2; ++round) {
      rewrite_factors(round == 0 ? -0.5f : 1.5f);  // in place, as an optimiser writes its flat buffer
      std::vector<LoraMergeSite> sites;
      for (const Layer& l : layers) sites.push_back({l.w, l.down, l.up, s});
      const int64_t made = lora_forms_merged_ahead();
      merge_lora_ahead(sites);
      EXPECT_GT(lora_forms_merged_ahead(), made) << precision_name(p) << ": nothing was formed ahead";
      if (round == 1) rewrite_factors(0.25f);  // after the merge ahead: its forms must not be read
      for (const Layer& l : layers) {
        Tensor fresh_w = l.w.clone();  // the same values, never merged ahead
        fresh_w.impl()->packable = true;
        Tensor y_ahead, y_fresh, dx_ahead, dx_fresh;
        {
          NoGradGuard no_grad;
          y_ahead = run_layer(l.w, l, false, nullptr);
          y_fresh = run_layer(fresh_w, l, false, nullptr);
        }
        run_layer(l.w, l, true, &dx_ahead);
        run_layer(fresh_w, l, true, &dx_fresh);
        for (int64_t i = 0; i < y_fresh.numel(); ++i)
          ASSERT_EQ(y_ahead.data()[i], y_fresh.data()[i]) << precision_name(p) << " round " << round << (l.conv ? " conv" : " linear") << " output " << i;
        for (int64_t i = 0; i < dx_fresh.numel(); ++i)
          ASSERT_EQ(dx_ahead.data()[i], dx_fresh.data()[i]) << precision_name(p) << " round " << round << (l.conv ? " conv" : " linear") << " ∂x " << i;
      }
    }
  }
}

}  // namespace
}  // namespace lcd