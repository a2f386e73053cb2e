// oneDNN direct convolution plans (see convolution.h).
#include "autograd/cpu/convolution.h"

#include <omp.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <unordered_map>
#include <vector>

#include "autograd/cpu/dnnl_support.h"
#include "autograd/cpu/plan_cache.h"
#include "autograd/errors.h"
#include "autograd/storage.h"

namespace lcd::cpu {

namespace {
using dt = dnnl::memory::data_type;
using tag = dnnl::memory::format_tag;
using dnnl_support::check;
using dnnl_support::engine;
using dnnl_support::to_dnnl;
}  // namespace

struct ConvPlan::Impl {
  ConvSpec spec;
  bool available = false;
  dnnl::primitive prim;
  dnnl::memory::desc in_desc, out_desc, weights_desc, bias_desc, scratch_desc;
  size_t scratch_bytes = 0;
  std::string kernel = "none";
  // Winograd F(4×4, 3×3) (fp32 forward) in bands of band_rows output rows (make_winograd_plan): one kind of
  // band for the whole image, or a top, (middle) and bottom kind that differ in padding.
  struct Band {
    dnnl::primitive conv, to_blocked, from_blocked;  // the kernel, and reorders from / to the NHWC views
    dnnl::memory::desc in_view, out_view;            // the band's rows of the NHWC input and output
    dnnl::memory::desc blocked_in, blocked_out, scratch;
  };
  std::vector<Band> bands;
  int64_t band_rows = 0;
  // Backward-weights: ∂W in the kernel's own layout (weights_desc), then added into the canonical OIHW
  // gradient by a reorder with a sum post-op.
  dnnl::primitive add_to_oihw;
  dnnl::memory::desc oihw_desc;
  struct ThreadState {  // memories re-pointed at every run (see MatmulPlan::Impl)
    dnnl::stream stream;
    dnnl::memory in, out, bias, scratch;
    struct BandMemories {  // Winograd, per kind of band
      dnnl::memory in_view, out_view, blocked_in, blocked_out, scratch;
    };
    std::vector<BandMemories> bands;
    dnnl::memory grad_w, grad_w_oihw;  // backward-weights: this thread's ∂W (kernel layout) and the target
    std::vector<float> grad_b;
  };
};

struct ConvWeights::Impl {
  std::unique_ptr<dnnl_support::ReorderedOperand> operand;
};

namespace {

using Key = std::array<int64_t, 15>;

// While alive, primitives made on this thread are made for one thread (oneDNN fixes a kernel's thread count
// and work split when it makes the primitive).
struct OneThread {
  int threads = omp_get_max_threads();
  OneThread() { omp_set_num_threads(1); }
  ~OneThread() { omp_set_num_threads(threads); }
};

std::atomic<int64_t> g_min_pixels{WinogradLimits{}.min_pixels};
std::atomic<int64_t> g_band_budget{WinogradLimits{}.band_pixel_channels};

// Winograd F(4×4, 3×3) for fp32 forwards of 3×3, stride-1, "same" convolutions on large images (see
// WinogradLimits) with 32 channels or more, where oneDNN has it (LCDKIT_NO_WINOGRAD=1 turns it off, for A/B
// timing). Its rounding error is 1–2× the direct kernel's.
bool winograd_candidate(const ConvSpec& s) {
  static const bool off = std::getenv("LCDKIT_NO_WINOGRAD") != nullptr;
  return !off && s.pass == ConvPass::kForward && s.type == DType::kF32 && s.kernel_h == 3 && s.kernel_w == 3 &&
         s.stride == 1 && s.padding == 1 && s.out_h == s.height && s.out_w == s.width &&
         s.height * s.width >= g_min_pixels.load() && s.channels >= 32 && s.out_channels >= 32;
}

// Its transformed weights are 4× the plain ones, a second copy beside the direct layout; above this a layer
// keeps the direct kernel (no layer of SD's autoencoder is above it).
constexpr size_t kWinogradWeightBytes = size_t(40) << 20;

// Output rows per band: the kernel's scratchpad holds the whole transformed band (1.2 GB for a 512² image at
// 256 channels in one band, where it ran at half the direct kernel's speed). Bands of at most ~2 M
// pixel-channels (16 rows of SD's 512² × 256 layers: 54 MB of scratchpad) ran at 1.7–2.5× the direct
// kernel. A multiple of 4 (the output tile) that divides the height, else the whole image.
int64_t winograd_band_rows(const ConvSpec& s) {
  const int64_t per_row = s.batch * s.width * std::max(s.channels, s.out_channels), budget = g_band_budget.load();
  if (s.height * per_row <= budget || s.height % 4 != 0) return s.height;
  int64_t rows = 4;
  for (int64_t b = 8; b < s.height; b += 4)
    if (s.height % b == 0 && b * per_row <= budget) rows = b;
  return rows;
}

// Fills impl's Winograd bands; false (impl untouched) where oneDNN has no F(4×4, 3×3) kernel for a band, or
// the bands' weight layouts differ or pass kWinogradWeightBytes.
bool make_winograd_plan(const ConvSpec& s, const dnnl::primitive_attr& attr, ConvPlan::Impl& impl) {
  const int64_t B = winograd_band_rows(s), count = s.height / B;
  const int64_t H = s.height, W = s.width, C = s.channels, O = s.out_channels;
  std::vector<std::pair<int64_t, int64_t>> pads;  // (top, bottom) per kind of band
  if (count == 1) pads = {{1, 1}};
  else if (count == 2) pads = {{1, 0}, {0, 1}};
  else pads = {{1, 0}, {0, 0}, {0, 1}};
  std::vector<ConvPlan::Impl::Band> bands;
  dnnl::memory::desc weights;
  std::string kernel;
  for (const auto& [top, bottom] : pads) {
    const int64_t in_rows = B + 2 - top - bottom;
    const dnnl::memory::desc in_any({s.batch, C, in_rows, W}, dt::f32, tag::any);
    const dnnl::memory::desc out_any({s.batch, O, B, W}, dt::f32, tag::any);
    const dnnl::memory::desc wei({O, C, 3, 3}, dt::f32, tag::any), bias({O}, dt::f32, tag::x);
    const auto d = s.bias ? dnnl::convolution_forward::desc(dnnl::prop_kind::forward_inference,
                                                            dnnl::algorithm::convolution_winograd, in_any, wei, bias,
                                                            out_any, {1, 1}, {top, 1}, {bottom, 1})
                          : dnnl::convolution_forward::desc(dnnl::prop_kind::forward_inference,
                                                            dnnl::algorithm::convolution_winograd, in_any, wei, out_any,
                                                            {1, 1}, {top, 1}, {bottom, 1});
    dnnl::convolution_forward::primitive_desc pd(d, attr, engine());
    // F(2×2, 3×3) comes first for some shapes, but splits its sums by the thread count: go on to F(4×4, 3×3).
    auto is_4x3 = [&] { return std::string(pd.impl_info_str()).rfind("jit_wino_4x3", 0) == 0; };
    bool found = is_4x3();
    while (!found && pd.next_impl()) found = is_4x3();
    if (!found || pd.weights_desc().get_size() > kWinogradWeightBytes) return false;
    if (bands.empty()) weights = pd.weights_desc();
    else if (!(pd.weights_desc() == weights)) return false;
    kernel = pd.impl_info_str();
    ConvPlan::Impl::Band b;
    // Views of the NHWC tensors: the band's rows of every image.
    b.in_view = dnnl::memory::desc({s.batch, C, in_rows, W}, dt::f32, dnnl::memory::dims{H * W * C, 1, W * C, C});
    b.out_view = dnnl::memory::desc({s.batch, O, B, W}, dt::f32, dnnl::memory::dims{H * W * O, 1, W * O, O});
    b.blocked_in = pd.src_desc();
    b.blocked_out = pd.dst_desc();
    b.scratch = pd.scratchpad_desc();
    b.conv = dnnl::convolution_forward(pd);
    b.to_blocked = dnnl::reorder(dnnl::reorder::primitive_desc(engine(), b.in_view, engine(), b.blocked_in));
    b.from_blocked = dnnl::reorder(dnnl::reorder::primitive_desc(engine(), b.blocked_out, engine(), b.out_view));
    bands.push_back(std::move(b));
  }
  impl.bands = std::move(bands);
  impl.band_rows = B;
  impl.weights_desc = weights;
  impl.kernel = kernel + (count > 1 ? " in " + std::to_string(count) + " bands" : "");
  return true;
}

std::unique_ptr<const ConvPlan::Impl> new_plan(const ConvSpec& s, bool alone) {
  auto impl = std::make_unique<ConvPlan::Impl>();
  impl->spec = s;
  const dt t = to_dnnl(s.type);
  const dnnl::memory::desc src({s.batch, s.channels, s.height, s.width}, t, tag::nhwc);
  const dnnl::memory::desc wei({s.out_channels, s.channels, s.kernel_h, s.kernel_w}, t, tag::any);
  const dnnl::memory::desc dst({s.batch, s.out_channels, s.out_h, s.out_w}, dt::f32, tag::nhwc);
  const dnnl::memory::desc bias({s.out_channels}, dt::f32, tag::x);
  // End padding as the output size implies (diffusers' Downsample2D pads the end only in the VAE).
  const int64_t pad_h = (s.out_h - 1) * s.stride + s.kernel_h - s.height - s.padding;
  const int64_t pad_w = (s.out_w - 1) * s.stride + s.kernel_w - s.width - s.padding;
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);  // several threads may run one plan at once
  try {
    const auto forward = [&](dnnl::prop_kind prop) {
      const auto d = s.bias ? dnnl::convolution_forward::desc(prop, dnnl::algorithm::convolution_direct, src, wei, bias,
                                                              dst, {s.stride, s.stride}, {s.padding, s.padding},
                                                              {pad_h, pad_w})
                            : dnnl::convolution_forward::desc(prop, dnnl::algorithm::convolution_direct, src, wei, dst,
                                                              {s.stride, s.stride}, {s.padding, s.padding}, {pad_h, pad_w});
      return dnnl::convolution_forward::primitive_desc(d, attr, engine());
    };
    std::unique_ptr<OneThread> one_thread;
    if (alone) one_thread = std::make_unique<OneThread>();
    if (winograd_candidate(s) && make_winograd_plan(s, attr, *impl)) {
      // impl's bands are made
    } else if (s.pass == ConvPass::kForward) {
      const auto pd = forward(dnnl::prop_kind::forward_inference);
      impl->kernel = pd.impl_info_str();
      impl->prim = dnnl::convolution_forward(pd);
      impl->in_desc = pd.src_desc();
      impl->out_desc = pd.dst_desc();
      impl->weights_desc = pd.weights_desc();
      impl->bias_desc = pd.bias_desc();
      impl->scratch_desc = pd.scratchpad_desc();
    } else if (s.pass == ConvPass::kBackwardWeights) {
      // x and ∂y in the operand type, ∂W and ∂b in float32 (the forward hint only picks the algorithm).
      const dnnl::memory::desc ddst({s.batch, s.out_channels, s.out_h, s.out_w}, t, tag::nhwc);
      const dnnl::memory::desc dwei({s.out_channels, s.channels, s.kernel_h, s.kernel_w}, dt::f32, tag::any);
      const dnnl::memory::desc dbias({s.out_channels}, dt::f32, tag::x);
      const auto hint = dnnl::convolution_forward::primitive_desc(
          dnnl::convolution_forward::desc(dnnl::prop_kind::forward_training, dnnl::algorithm::convolution_direct, src,
                                          wei, ddst, {s.stride, s.stride}, {s.padding, s.padding}, {pad_h, pad_w}),
          engine());
      const auto d = s.bias ? dnnl::convolution_backward_weights::desc(dnnl::algorithm::convolution_direct, src, dwei,
                                                                       dbias, ddst, {s.stride, s.stride},
                                                                       {s.padding, s.padding}, {pad_h, pad_w})
                            : dnnl::convolution_backward_weights::desc(dnnl::algorithm::convolution_direct, src, dwei,
                                                                       ddst, {s.stride, s.stride},
                                                                       {s.padding, s.padding}, {pad_h, pad_w});
      // Made for one thread: the kernel fixes its thread count here and its threads meet at barriers, which
      // would never be reached when run inside a batch part's parallel region (where it runs alone).
      if (!one_thread) one_thread = std::make_unique<OneThread>();
      const dnnl::convolution_backward_weights::primitive_desc pd(d, attr, engine(), hint);
      impl->kernel = pd.impl_info_str();
      impl->prim = dnnl::convolution_backward_weights(pd);
      impl->in_desc = pd.src_desc();
      impl->out_desc = pd.diff_dst_desc();
      impl->weights_desc = pd.diff_weights_desc();
      impl->bias_desc = dbias;
      impl->scratch_desc = pd.scratchpad_desc();
      impl->oihw_desc = dnnl::memory::desc({s.out_channels, s.channels, s.kernel_h, s.kernel_w}, dt::f32, tag::oihw);
      dnnl::post_ops sum;
      sum.append_sum(1.0f);
      dnnl::primitive_attr add;
      add.set_post_ops(sum);
      impl->add_to_oihw = dnnl::reorder(dnnl::reorder::primitive_desc(engine(), impl->weights_desc, engine(),
                                                                      impl->oihw_desc, add));
    } else {
      // ∂y in the operand type, ∂x in float32 (the forward hint only picks the algorithm).
      const dnnl::memory::desc dsrc({s.batch, s.channels, s.height, s.width}, dt::f32, tag::nhwc);
      const dnnl::memory::desc ddst({s.batch, s.out_channels, s.out_h, s.out_w}, t, tag::nhwc);
      const dnnl::memory::desc fsrc({s.batch, s.channels, s.height, s.width}, t, tag::nhwc);
      const auto hint = dnnl::convolution_forward::primitive_desc(
          dnnl::convolution_forward::desc(dnnl::prop_kind::forward_training, dnnl::algorithm::convolution_direct, fsrc,
                                          wei, dnnl::memory::desc({s.batch, s.out_channels, s.out_h, s.out_w}, t, tag::nhwc),
                                          {s.stride, s.stride}, {s.padding, s.padding}, {pad_h, pad_w}),
          engine());
      const dnnl::convolution_backward_data::primitive_desc pd(
          dnnl::convolution_backward_data::desc(dnnl::algorithm::convolution_direct, dsrc, wei, ddst, {s.stride, s.stride},
                                                {s.padding, s.padding}, {pad_h, pad_w}),
          attr, engine(), hint);
      impl->kernel = pd.impl_info_str();
      impl->prim = dnnl::convolution_backward_data(pd);
      impl->in_desc = pd.diff_dst_desc();
      impl->out_desc = pd.diff_src_desc();
      impl->weights_desc = pd.weights_desc();
      impl->scratch_desc = pd.scratchpad_desc();
    }
    // JIT kernels only: gemm-based ones build im2col themselves (and may split sums among threads), the
    // reference ones are slow.
    static const bool off = std::getenv("LCDKIT_NO_DIRECT_CONV") != nullptr;  // debugging: the im2col path only
    impl->available = !off && (impl->kernel.rfind("brgconv", 0) == 0 || impl->kernel.rfind("jit", 0) == 0);
  } catch (const dnnl::error&) {
    impl->available = false;
  }
  if (impl->available) impl->scratch_bytes = impl->scratch_desc.get_size();
  if (std::getenv("LCDKIT_PRINT_PLANS"))
    std::fprintf(stderr, "conv %s plan n%lld %lldx%lldx%lld → %lld, k%lldx%lld s%lld p%lld %s: %s%s\n",
                 s.pass == ConvPass::kForward        ? "forward"
                 : s.pass == ConvPass::kBackwardData ? "backward-data"
                                                     : "backward-weights",
                 (long long)s.batch,
                 (long long)s.height, (long long)s.width, (long long)s.channels, (long long)s.out_channels,
                 (long long)s.kernel_h, (long long)s.kernel_w, (long long)s.stride, (long long)s.padding,
                 s.type == DType::kBf16 ? "bf16" : "f32", impl->kernel.c_str(), impl->available ? "" : " (not used)");
  return impl;
}

const ConvPlan::Impl* make_plan(const ConvSpec& s) {
  // A Winograd plan asked for inside a parallel region (a batch part) runs there on one thread: it is made
  // for one thread, so that its work split fits.
  const bool alone = winograd_candidate(s) && omp_in_parallel();
  const Key key{s.batch, s.height, s.width, s.channels, s.out_channels, s.kernel_h, s.kernel_w, s.stride, s.padding,
                s.out_h, s.out_w, int64_t(s.type), s.bias, int64_t(s.pass), alone};
  return cached_plan<ConvPlan::Impl>(key, [&] { return new_plan(s, alone); });
}

// The calling thread's memories for plan p, made on its first run there (plans live as long as the process).
ConvPlan::Impl::ThreadState& thread_state(const ConvPlan::Impl& p) {
  thread_local std::unordered_map<const ConvPlan::Impl*, ConvPlan::Impl::ThreadState> states;
  auto [it, fresh] = states.try_emplace(&p);
  ConvPlan::Impl::ThreadState& st = it->second;
  if (!fresh) return st;
  st.stream = dnnl::stream(engine());
  if (!p.bands.empty()) {  // Winograd
    for (const ConvPlan::Impl::Band& b : p.bands)
      st.bands.push_back({dnnl::memory(b.in_view, engine(), DNNL_MEMORY_NONE),
                          dnnl::memory(b.out_view, engine(), DNNL_MEMORY_NONE),
                          dnnl::memory(b.blocked_in, engine(), DNNL_MEMORY_NONE),
                          dnnl::memory(b.blocked_out, engine(), DNNL_MEMORY_NONE),
                          dnnl::memory(b.scratch, engine(), DNNL_MEMORY_NONE)});
    st.bias = dnnl::memory(dnnl::memory::desc({p.spec.out_channels}, dt::f32, tag::x), engine(), DNNL_MEMORY_NONE);
    return st;
  }
  st.in = dnnl::memory(p.in_desc, engine(), DNNL_MEMORY_NONE);
  st.out = dnnl::memory(p.out_desc, engine(), DNNL_MEMORY_NONE);
  st.scratch = dnnl::memory(p.scratch_desc, engine(), DNNL_MEMORY_NONE);
  if (p.spec.pass != ConvPass::kBackwardWeights) {
    if (p.spec.bias) st.bias = dnnl::memory(p.bias_desc, engine(), DNNL_MEMORY_NONE);
    return st;
  }
  st.grad_w = dnnl::memory(p.weights_desc, engine());  // owned: this thread's ∂W before it is added
  st.grad_w_oihw = dnnl::memory(p.oihw_desc, engine(), DNNL_MEMORY_NONE);
  st.grad_b.resize(static_cast<size_t>(p.spec.out_channels));
  if (p.spec.bias) st.bias = dnnl::memory(p.bias_desc, engine(), st.grad_b.data());
  return st;
}

// Band after band: the band's input rows (with their halo) reordered into the kernel's blocked layout, the
// convolution, and its output rows reordered into place, through blocks of recycled storage.
void run_winograd(const ConvPlan::Impl& p, ConvPlan::Impl::ThreadState& st, const float* in, const ConvWeights& w,
                  float* out, const float* bias) {
  const ConvSpec& s = p.spec;
  const int64_t B = p.band_rows, H = s.height, W = s.width, C = s.channels, O = s.out_channels;
  size_t in_bytes = 0, out_bytes = 0, scratch_bytes = 0;
  for (const ConvPlan::Impl::Band& b : p.bands) {
    in_bytes = std::max(in_bytes, b.blocked_in.get_size());
    out_bytes = std::max(out_bytes, b.blocked_out.get_size());
    scratch_bytes = std::max(scratch_bytes, b.scratch.get_size());
  }
  auto block = [](size_t bytes) { return allocate_storage<float>(int64_t(bytes / sizeof(float) + 16), false); };
  const std::shared_ptr<float> blocked_in = block(in_bytes), blocked_out = block(out_bytes), scratch = block(scratch_bytes);
  const dnnl::memory& weights = w.impl().operand->in_layout(p.weights_desc);
  dnnl_stream_t stream = st.stream.get();
  if (bias) check(dnnl_memory_set_data_handle_v2(st.bias.get(), const_cast<float*>(bias), stream), "bias handle");
  for (int64_t r0 = 0; r0 < H; r0 += B) {
    const size_t kind = r0 == 0 ? 0 : r0 + B == H ? p.bands.size() - 1 : 1;
    ConvPlan::Impl::ThreadState::BandMemories& m = st.bands[kind];
    const int64_t in_row0 = r0 == 0 ? 0 : r0 - 1;  // the row above the band, its halo
    check(dnnl_memory_set_data_handle_v2(m.in_view.get(), const_cast<float*>(in) + in_row0 * W * C, stream), "input handle");
    check(dnnl_memory_set_data_handle_v2(m.out_view.get(), out + r0 * W * O, stream), "output handle");
    check(dnnl_memory_set_data_handle_v2(m.blocked_in.get(), blocked_in.get(), stream), "blocked input handle");
    check(dnnl_memory_set_data_handle_v2(m.blocked_out.get(), blocked_out.get(), stream), "blocked output handle");
    check(dnnl_memory_set_data_handle_v2(m.scratch.get(), scratch.get(), stream), "scratchpad handle");
    const dnnl_exec_arg_t to[2] = {{DNNL_ARG_FROM, m.in_view.get()}, {DNNL_ARG_TO, m.blocked_in.get()}};
    dnnl_support::execute(p.bands[kind].to_blocked, st.stream, 2, to, true, "input reorder");
    dnnl_exec_arg_t args[5] = {{DNNL_ARG_SRC, m.blocked_in.get()}, {DNNL_ARG_WEIGHTS, weights.get()},
                               {DNNL_ARG_DST, m.blocked_out.get()}, {DNNL_ARG_SCRATCHPAD, m.scratch.get()}};
    int nargs = 4;
    if (bias) args[nargs++] = {DNNL_ARG_BIAS, st.bias.get()};
    dnnl_support::execute(p.bands[kind].conv, st.stream, nargs, args, true, "convolution");
    const dnnl_exec_arg_t from[2] = {{DNNL_ARG_FROM, m.blocked_out.get()}, {DNNL_ARG_TO, m.out_view.get()}};
    dnnl_support::execute(p.bands[kind].from_blocked, st.stream, 2, from, true, "output reorder");
  }
}

}  // namespace

void set_winograd_limits(const WinogradLimits& limits) {
  g_min_pixels = limits.min_pixels;
  g_band_budget = limits.band_pixel_channels;
}

ConvPlan::ConvPlan(const ConvSpec& spec) : impl_(make_plan(spec)) {}
bool ConvPlan::available() const { return impl_->available; }
const char* ConvPlan::kernel() const { return impl_->kernel.c_str(); }

void ConvPlan::run(const void* in, const ConvWeights& w, float* out, const float* bias) const {
  const Impl& p = *impl_;
  if (!p.available) throw Error("convolution: no direct kernel for this shape (check available() first)");
  if (p.spec.pass == ConvPass::kBackwardWeights) throw Error("convolution: a backward-weights plan has no run()");
  Impl::ThreadState& st = thread_state(p);
  const bool forward = p.spec.pass == ConvPass::kForward;
  dnnl_stream_t stream = st.stream.get();
  if (!p.bands.empty()) return run_winograd(p, st, static_cast<const float*>(in), w, out, bias);
  check(dnnl_memory_set_data_handle_v2(st.in.get(), const_cast<void*>(in), stream), "input handle");
  check(dnnl_memory_set_data_handle_v2(st.out.get(), out, stream), "output handle");
  const dnnl::memory& weights = w.impl().operand->in_layout(p.weights_desc);
  dnnl_exec_arg_t args[5] = {{forward ? DNNL_ARG_SRC : DNNL_ARG_DIFF_DST, st.in.get()},
                             {DNNL_ARG_WEIGHTS, weights.get()},
                             {forward ? DNNL_ARG_DST : DNNL_ARG_DIFF_SRC, st.out.get()}};
  int nargs = 3;
  if (p.scratch_bytes) {
    check(dnnl_memory_set_data_handle_v2(st.scratch.get(), dnnl_support::thread_scratch(p.scratch_bytes), stream),
          "scratchpad handle");
    args[nargs++] = {DNNL_ARG_SCRATCHPAD, st.scratch.get()};
  }
  if (p.spec.bias) {
    check(dnnl_memory_set_data_handle_v2(st.bias.get(), const_cast<float*>(bias), stream), "bias handle");
    args[nargs++] = {DNNL_ARG_BIAS, st.bias.get()};
  }
  dnnl_support::execute(p.prim, st.stream, nargs, args, true, "convolution");
}

void ConvPlan::accumulate_weight_gradient(const void* x, const void* grad_y, float* grad_w, float* grad_b) const {
  const Impl& p = *impl_;
  if (!p.available || p.spec.pass != ConvPass::kBackwardWeights)
    throw Error("convolution: accumulate_weight_gradient needs an available backward-weights plan");
  Impl::ThreadState& st = thread_state(p);
  dnnl_stream_t stream = st.stream.get();
  check(dnnl_memory_set_data_handle_v2(st.in.get(), const_cast<void*>(x), stream), "input handle");
  check(dnnl_memory_set_data_handle_v2(st.out.get(), const_cast<void*>(grad_y), stream), "output gradient handle");
  dnnl_exec_arg_t args[5] = {{DNNL_ARG_SRC, st.in.get()}, {DNNL_ARG_DIFF_DST, st.out.get()},
                             {DNNL_ARG_DIFF_WEIGHTS, st.grad_w.get()}};
  int nargs = 3;
  if (p.scratch_bytes) {
    check(dnnl_memory_set_data_handle_v2(st.scratch.get(), dnnl_support::thread_scratch(p.scratch_bytes), stream),
          "scratchpad handle");
    args[nargs++] = {DNNL_ARG_SCRATCHPAD, st.scratch.get()};
  }
  if (p.spec.bias) args[nargs++] = {DNNL_ARG_DIFF_BIAS, st.bias.get()};
  dnnl_support::execute(p.prim, st.stream, nargs, args, false, "convolution backward-weights");
  // grad_w += ∂W, reordered from the kernel's layout into OIHW.
  check(dnnl_memory_set_data_handle_v2(st.grad_w_oihw.get(), grad_w, stream), "weight gradient handle");
  const dnnl_exec_arg_t add[2] = {{DNNL_ARG_FROM, st.grad_w.get()}, {DNNL_ARG_TO, st.grad_w_oihw.get()}};
  dnnl_support::execute(p.add_to_oihw, st.stream, 2, add, false, "weight gradient reorder");
  if (p.spec.bias && grad_b)
    for (int64_t o = 0; o < p.spec.out_channels; ++o) grad_b[o] += st.grad_b[static_cast<size_t>(o)];
}

ConvWeights::ConvWeights(const float* w, Order order, const ConvPlan& plan) : impl_(std::make_unique<Impl>()) {
  const ConvSpec& s = plan.impl_->spec;
  const dnnl::memory::desc d({s.out_channels, s.channels, s.kernel_h, s.kernel_w}, dt::f32,
                             order == Order::kOIHW ? tag::oihw : tag::ohwi);
  const dnnl::memory src(d, engine(), const_cast<float*>(w));
  impl_->operand = std::make_unique<dnnl_support::ReorderedOperand>(src, plan.impl_->weights_desc);
}

ConvWeights::~ConvWeights() = default;

}  // namespace lcd::cpu
