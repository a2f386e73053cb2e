// The ceiling the comparison measures lcdkit against: oneDNN's own rate at this UNet's layer shapes, on this
// machine, in this run. One UNet forward at --batch records every convolution and linear lcdkit runs
// (row_gemm's layer observer); each distinct shape is then timed as oneDNN is meant to be used (its own
// threading over the whole layer, data initialised, median of --reps): 3×3 and strided convolutions as
// oneDNN convolutions (fp32: the faster of direct and Winograd F(4×4, 3×3); bf16: direct), 1×1 convolutions
// and linears as oneDNN matmuls with packed weights. The ceiling is the layer mix's total FLOPs over the sum
// of those times: how fast the UNet's GEMM-shaped work would run if every layer ran at oneDNN's best rate.
// Usage: bench_ceiling [--model DIR] [--threads N] [--batch B] [--reps R] [--verbose]
// Prints: "ceiling fp32 <GFLOP/s> bf16 <GFLOP/s|n/a> batch B"
#include <dnnl.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <map>
#include <random>
#include <tuple>

#include "autograd/cpu/precision.h"
#include "autograd/ops/row_gemm.h"
#include "autograd/random.h"
#include "autograd/threads.h"
#include "infer/io/model_io.h"
#include "infer/tools/cli.h"

using namespace lcd;
namespace fs = std::filesystem;

namespace {

using Key = std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, bool>;
std::map<Key, int64_t>* g_shapes = nullptr;  // shape → calls in one forward

void record(const row_gemm::Geometry& g) {
  const ConvGeometry& c = g.conv;
  const Key k = g.im2col ? Key{c.batch, c.height, c.width, c.channels, g.n, c.kernel_h, c.stride, c.padding, c.out_h, c.out_w, true}
                         : Key{g.rows, g.k, g.n, 0, 0, 0, 0, 0, 0, 0, false};
  ++(*g_shapes)[k];
}

void fill(dnnl::memory& m) {
  auto* p = static_cast<uint8_t*>(m.get_data_handle());
  std::mt19937 rng(7);
  std::uniform_int_distribution<int> byte(0, 255);
  // Random mantissas with small exponents: finite, normal values in either precision (never the zero page).
  const size_t n = m.get_desc().get_size();
  for (size_t i = 0; i < n; ++i) p[i] = static_cast<uint8_t>(byte(rng));
  if (m.get_desc().data_type() == dnnl::memory::data_type::f32)
    for (size_t i = 3; i < n; i += 4) p[i] = 0x3e + (p[i] & 1);
  else
    for (size_t i = 1; i < n; i += 2) p[i] = 0x3e + (p[i] & 1);
}

template <typename F>
double median_seconds(F&& run, int reps) {
  for (int i = 0; i < 3; ++i) run();
  std::vector<double> t;
  for (int i = 0; i < reps; ++i) {
    const auto a = std::chrono::steady_clock::now();
    run();
    t.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - a).count());
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

using dt = dnnl::memory::data_type;
using tag = dnnl::memory::format_tag;

double time_conv(dnnl::engine& eng, const Key& k, dt type, dnnl::algorithm alg, int reps) {
  const auto [n, h, w, ci, co, kk, s, p, oh, ow, conv] = k;
  const int64_t pad_r = (oh - 1) * s + kk - h - p;  // diffusers' Downsample2D pads the end only
  const dnnl::memory::desc src({n, ci, h, w}, type, alg == dnnl::algorithm::convolution_winograd ? tag::any : tag::nhwc);
  const dnnl::memory::desc wei({co, ci, kk, kk}, type, tag::any), bias({co}, dt::f32, tag::x);
  const dnnl::memory::desc dst({n, co, oh, ow}, type, alg == dnnl::algorithm::convolution_winograd ? tag::any : tag::nhwc);
  dnnl::convolution_forward::desc d(dnnl::prop_kind::forward_inference, alg, src, wei, bias, dst, {s, s}, {p, p},
                                    {pad_r, pad_r});
  dnnl::convolution_forward::primitive_desc pd(d, eng);
  dnnl::memory ms(pd.src_desc(), eng), mw(pd.weights_desc(), eng), mb(pd.bias_desc(), eng), md(pd.dst_desc(), eng);
  for (auto* m : {&ms, &mw, &mb, &md}) fill(*m);
  dnnl::convolution_forward prim(pd);
  dnnl::stream st(eng);
  return median_seconds([&] {
    prim.execute(st, {{DNNL_ARG_SRC, ms}, {DNNL_ARG_WEIGHTS, mw}, {DNNL_ARG_BIAS, mb}, {DNNL_ARG_DST, md}});
    st.wait();
  }, reps);
}

double time_matmul(dnnl::engine& eng, int64_t m, int64_t k, int64_t n, dt type, int reps) {
  const dnnl::memory::desc a({m, k}, type, tag::ab), b({k, n}, type, tag::any), c({m, n}, dt::f32, tag::ab);
  dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(a, b, c), eng);
  dnnl::memory ma(pd.src_desc(), eng), mb(pd.weights_desc(), eng), mc(pd.dst_desc(), eng);
  for (auto* x : {&ma, &mb, &mc}) fill(*x);
  dnnl::matmul prim(pd);
  dnnl::stream st(eng);
  return median_seconds([&] {
    prim.execute(st, {{DNNL_ARG_SRC, ma}, {DNNL_ARG_WEIGHTS, mb}, {DNNL_ARG_DST, mc}});
    st.wait();
  }, reps);
}

}  // namespace

int main(int argc, char** argv) {
  return run_tool("bench_ceiling", [&] {
    std::string model = "models/fmnist-ldm-v1", threads, batch = "64", reps = "20";
    bool verbose = false;
    ArgParser p("bench_ceiling", "[options]", "oneDNN's own rate at the UNet's layer shapes (the comparison's ceiling).");
    p.option("--model", "DIR", "model directory", &model);
    p.threads(&threads);
    p.option("--batch", "B", "batch of the recorded forward", &batch);
    p.option("--reps", "R", "timed runs per shape", &reps);
    p.flag("--verbose", "print every shape", &verbose);
    if (!p.parse(argc, argv)) return 0;
    apply_threads(threads);
    const int b = parse_int("--batch", batch), r = parse_int("--reps", reps);

    // Record the layer mix of one forward (with grad mode on and nothing to record, so the batch runs whole).
    auto unet = load_unet((fs::path(model) / "unet").string());
    const Tensor table = load_cond_embeddings(model);
    std::vector<int64_t> labels;
    for (int i = 0; i < b; ++i) labels.push_back(i % 10);
    Rng rng(0);
    std::map<Key, int64_t> shapes;
    g_shapes = &shapes;
    row_gemm::observe_layers(record);
    unet->forward(rng.normal_tensor({b, unet->config.in_channels, 8, 8}), std::vector<double>(b, 500.0), embedding(table, labels));
    row_gemm::observe_layers(nullptr);

    dnnl::engine eng(dnnl::engine::kind::cpu, 0);
    const bool bf16 = bf16_supported();
    double flops = 0, t32 = 0, t16 = 0;
    for (const auto& [k, calls] : shapes) {
      const auto [n, h, w, ci, co, kk, s, pd, oh, ow, conv] = k;
      const double f = conv ? 2.0 * n * oh * ow * co * ci * kk * kk : 2.0 * n * h * w;  // matmul: m·k·n in n,h,w
      double a32, a16 = 0;
      if (conv) {
        a32 = time_conv(eng, k, dt::f32, dnnl::algorithm::convolution_direct, r);
        if (kk == 3 && s == 1) {
          try {
            a32 = std::min(a32, time_conv(eng, k, dt::f32, dnnl::algorithm::convolution_winograd, r));
          } catch (const dnnl::error&) {
          }
        }
        if (bf16) a16 = time_conv(eng, k, dt::bf16, dnnl::algorithm::convolution_direct, r);
      } else {
        a32 = time_matmul(eng, n, h, w, dt::f32, r);
        if (bf16) a16 = time_matmul(eng, n, h, w, dt::bf16, r);
      }
      flops += calls * f;
      t32 += calls * a32;
      t16 += calls * a16;
      if (verbose)
        std::printf("%s %s calls %lld: fp32 %.0f GFLOP/s, bf16 %.0f GFLOP/s\n", conv ? "conv" : "matmul",
                    conv ? (std::to_string(n) + "x" + std::to_string(h) + "x" + std::to_string(w) + "x" + std::to_string(ci) +
                            "->" + std::to_string(co) + " k" + std::to_string(kk) + " s" + std::to_string(s))
                               .c_str()
                         : (std::to_string(n) + "x" + std::to_string(h) + "x" + std::to_string(w)).c_str(),
                    static_cast<long long>(calls), f / a32 / 1e9, a16 > 0 ? f / a16 / 1e9 : 0.0);
    }
    if (bf16)
      std::printf("ceiling fp32 %.0f bf16 %.0f batch %d\n", flops / t32 / 1e9, flops / t16 / 1e9, b);
    else
      std::printf("ceiling fp32 %.0f bf16 n/a batch %d\n", flops / t32 / 1e9, b);
    return 0;
  });
}
