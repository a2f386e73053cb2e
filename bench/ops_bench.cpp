// Microbenchmarks of conv2d, linear and attention forward(+backward) at the shapes of the fmnist-ldm-v1 UNet
// (DESIGN.md §3: 4×8×8 latents, channels 64/128, batch 64), next to Eigen's raw GEMM rate.
// Run: build/bench/bench_ops [--benchmark_filter=...]; the GFLOP/s counter is the achieved rate.
#include <benchmark/benchmark.h>

#include <Eigen/Core>
#include <optional>

#include "autograd/gemm.h"
#include "autograd/ops.h"
#include "autograd/tape.h"
#include "autograd/threads.h"

namespace lcd {
namespace {

Tensor filled(const Shape& s, float v) { return Tensor::full(s, v); }

void set_rate(benchmark::State& state, double flops_per_iter) {
  state.counters["GFLOP/s"] =
      benchmark::Counter(flops_per_iter * 1e-9 * state.iterations(), benchmark::Counter::kIsRate);
}

// Raw Eigen float GEMM kernel, square n, threaded as every lcdkit GEMM is (autograd/gemm.h).
void BM_EigenGemm(benchmark::State& state) {
  const int n = state.range(0);
  Eigen::MatrixXf a = Eigen::MatrixXf::Random(n, n), b = Eigen::MatrixXf::Random(n, n), c(n, n);
  for (auto _ : state) {
    gemm(c, a, b, false);
    benchmark::DoNotOptimize(c.data());
  }
  set_rate(state, 2.0 * n * n * n);
}
BENCHMARK(BM_EigenGemm)->Arg(256)->Arg(512)->Arg(1024)->Unit(benchmark::kMillisecond);

// conv2d forward + backward (input and weight gradients). Args: N, Cin, Cout, H, kernel, stride.
void BM_Conv2d(benchmark::State& state, bool backward) {
  const int64_t n = state.range(0), cin = state.range(1), cout = state.range(2), h = state.range(3),
                k = state.range(4), stride = state.range(5), pad = k / 2;
  Tensor x = filled({n, cin, h, h}, 0.1f), w = filled({cout, cin, k, k}, 0.01f), b = filled({cout}, 0.0f);
  if (backward) {
    x.set_requires_grad(true);
    w.set_requires_grad(true);
    b.set_requires_grad(true);
  }
  const int64_t ho = (h + 2 * pad - k) / stride + 1;
  const double fwd = 2.0 * n * cout * ho * ho * cin * k * k;
  for (auto _ : state) {
    Tensor y = conv2d(x, w, b, {int(stride), int(pad)});
    if (backward) sum(y).backward();
    benchmark::DoNotOptimize(y.data());
  }
  set_rate(state, backward ? 3 * fwd : fwd);
}

void conv_shapes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"N", "Cin", "Cout", "H", "k", "s"});
  b->Args({64, 4, 64, 8, 3, 1});     // conv_in
  b->Args({64, 64, 64, 8, 3, 1});    // down 0 / up 1 resnets
  b->Args({64, 64, 64, 8, 3, 2});    // downsampler
  b->Args({64, 64, 128, 4, 3, 1});   // down 1 first resnet
  b->Args({64, 128, 128, 4, 3, 1});  // down 1 / mid resnets
  b->Args({64, 256, 128, 4, 3, 1});  // up 0 (skip concat)
  b->Args({64, 192, 64, 8, 3, 1});   // up 1 first resnet
  b->Args({64, 64, 64, 8, 1, 1});    // proj_in / proj_out (1×1)
  b->Args({64, 256, 128, 4, 1, 1});  // conv_shortcut
  b->Unit(benchmark::kMicrosecond);
}
BENCHMARK_CAPTURE(BM_Conv2d, forward, false)->Apply(conv_shapes);
BENCHMARK_CAPTURE(BM_Conv2d, forward_backward, true)->Apply(conv_shapes);

// linear forward + backward. Args: rows, in, out.
void BM_Linear(benchmark::State& state, bool backward) {
  const int64_t rows = state.range(0), in = state.range(1), out = state.range(2);
  Tensor x = filled({rows, in}, 0.1f), w = filled({out, in}, 0.01f), b = filled({out}, 0.0f);
  if (backward) {
    x.set_requires_grad(true);
    w.set_requires_grad(true);
    b.set_requires_grad(true);
  }
  for (auto _ : state) {
    Tensor y = linear(x, w, b);
    if (backward) sum(y).backward();
    benchmark::DoNotOptimize(y.data());
  }
  set_rate(state, (backward ? 3.0 : 1.0) * 2.0 * rows * in * out);
}
void linear_shapes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"rows", "in", "out"});
  b->Args({64 * 64, 64, 64});    // to_q/to_k/to_v/to_out at 8×8, 64 channels
  b->Args({64 * 64, 64, 512});   // GEGLU proj (inner 256 ×2)
  b->Args({64 * 64, 256, 64});   // ff.net.2
  b->Args({64 * 16, 128, 128});  // attention at 4×4, 128 channels
  b->Args({64 * 4, 64, 64});     // to_k/to_v over the 4-token condition
  b->Unit(benchmark::kMicrosecond);
}
BENCHMARK_CAPTURE(BM_Linear, forward, false)->Apply(linear_shapes);
BENCHMARK_CAPTURE(BM_Linear, forward_backward, true)->Apply(linear_shapes);

// attention forward (no grad) or forward + backward. Args: batch, query tokens, key tokens, channels, heads.
void BM_Attention(benchmark::State& state, bool backward) {
  const int64_t b = state.range(0), lq = state.range(1), lk = state.range(2), c = state.range(3), heads = state.range(4);
  Tensor q = Tensor::full({b, lq, c}, 0.1f), k = Tensor::full({b, lk, c}, 0.2f), v = Tensor::full({b, lk, c}, 0.3f);
  if (backward)
    for (Tensor* t : {&q, &k, &v}) t->set_requires_grad(true);
  for (auto _ : state) {
    std::optional<NoGradGuard> g;
    if (!backward) g.emplace();
    Tensor o = attention(q, k, v, heads);
    if (backward) sum(o).backward();
    benchmark::DoNotOptimize(o.data());
  }
  set_rate(state, (backward ? 3.0 : 1.0) * 4.0 * b * lq * lk * c);
}
void attention_shapes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"batch", "lq", "lk", "c", "heads"});
  b->Args({64, 64, 64, 64, 8});    // self-attention at 8×8
  b->Args({64, 64, 4, 64, 8});     // cross-attention over the 4-token condition
  b->Args({64, 16, 16, 128, 16});  // self-attention at 4×4
  b->Args({64, 16, 4, 128, 16});   // cross-attention at 4×4
  b->Unit(benchmark::kMicrosecond);
}
BENCHMARK_CAPTURE(BM_Attention, forward, false)->Apply(attention_shapes);
BENCHMARK_CAPTURE(BM_Attention, forward_backward, true)->Apply(attention_shapes);

}  // namespace
}  // namespace lcd

int main(int argc, char** argv) {
  if (const char* t = std::getenv("LCDKIT_THREADS")) lcd::set_num_threads(std::atoi(t));
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  return 0;
}
