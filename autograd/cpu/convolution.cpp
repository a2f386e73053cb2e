// oneDNN direct convolution plans (see convolution.h).
#include "autograd/cpu/convolution.h"

#include <omp.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "autograd/cpu/dnnl_support.h"
#include "autograd/errors.h"

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
  // Backward-weights: ∂W in the kernel's own layout (weights_desc), then added into the canonical OIHW
  // gradient by a reorder with a sum post-op.
  dnnl::primitive add_to_oihw;
  dnnl::memory::desc oihw_desc;
  struct ThreadState {  // memories re-pointed at every run (see MatmulPlan::Impl)
    dnnl::stream stream;
    dnnl::memory in, out, bias, scratch;
    dnnl::memory grad_w, grad_w_oihw;  // backward-weights: this thread's ∂W (kernel layout) and the target
    std::vector<float> grad_b;
  };
};

struct ConvWeights::Impl {
  std::unique_ptr<dnnl_support::ReorderedOperand> operand;
};

namespace {

using Key = std::array<int64_t, 14>;

std::shared_ptr<const ConvPlan::Impl> make_plan(const ConvSpec& s) {
  static std::mutex mutex;
  static std::map<Key, std::shared_ptr<const ConvPlan::Impl>> cache;
  const Key key{s.batch, s.height, s.width, s.channels, s.out_channels, s.kernel_h, s.kernel_w, s.stride, s.padding,
                s.out_h, s.out_w, int64_t(s.type), s.bias, int64_t(s.pass)};
  std::lock_guard<std::mutex> lock(mutex);
  auto it = cache.find(key);
  if (it != cache.end()) return it->second;

  auto impl = std::make_shared<ConvPlan::Impl>();
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
    if (s.pass == ConvPass::kForward) {
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
      struct OneThread {
        int threads = omp_get_max_threads();
        OneThread() { omp_set_num_threads(1); }
        ~OneThread() { omp_set_num_threads(threads); }
      };
      const OneThread one_thread;
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
  cache.emplace(key, impl);
  return impl;
}

// The calling thread's memories for plan p, made on its first run there (plans live as long as the process).
ConvPlan::Impl::ThreadState& thread_state(const ConvPlan::Impl& p) {
  thread_local std::unordered_map<const ConvPlan::Impl*, ConvPlan::Impl::ThreadState> states;
  auto [it, fresh] = states.try_emplace(&p);
  ConvPlan::Impl::ThreadState& st = it->second;
  if (!fresh) return st;
  st.stream = dnnl::stream(engine());
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

}  // namespace

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
