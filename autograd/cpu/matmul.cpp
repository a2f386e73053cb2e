// oneDNN matmul plans and packed operands (see matmul.h).
#include "autograd/cpu/matmul.h"

#include <dnnl.h>

#include <dnnl.hpp>
#include <map>
#include <mutex>
#include <string>
#include <unordered_map>
#include <algorithm>
#include <array>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "autograd/cpu/dnnl_support.h"
#include "autograd/cpu/plan_cache.h"
#include "autograd/errors.h"

namespace lcd::cpu {

namespace {

using dt = dnnl::memory::data_type;
using dims = dnnl::memory::dims;

using dnnl_support::check;
using dnnl_support::engine;
using dnnl_support::to_dnnl;

dnnl::memory::desc desc_of(const Layout& l) {
  return dnnl::memory::desc(dims{l.rows, l.cols}, to_dnnl(l.type), dims{l.row_stride, l.col_stride});
}

}  // namespace

// ---- PackedMatrix ----

struct PackedMatrix::Impl {
  int64_t k, n;
  DType type;
  std::unique_ptr<dnnl_support::ReorderedOperand> operand;
};

PackedMatrix::PackedMatrix(const void* b, const Layout& l, DType type) : impl_(std::make_unique<Impl>()) {
  impl_->k = l.rows;
  impl_->n = l.cols;
  impl_->type = type;
  // The layout a typical chunk of 256 rows asks for; other row counts rarely differ (then in_layout()).
  const dnnl::memory::desc a({256, l.rows}, to_dnnl(type), dnnl::memory::format_tag::ab);
  const dnnl::memory::desc bany({l.rows, l.cols}, to_dnnl(type), dnnl::memory::format_tag::any);
  const dnnl::memory::desc c({256, l.cols}, dt::f32, dnnl::memory::format_tag::ab);
  dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(a, bany, c), engine());
  dnnl::memory src(desc_of(l), engine(), const_cast<void*>(b));
  impl_->operand = std::make_unique<dnnl_support::ReorderedOperand>(src, pd.weights_desc());
}

PackedMatrix::~PackedMatrix() = default;
int64_t PackedMatrix::rows() const { return impl_->k; }
int64_t PackedMatrix::cols() const { return impl_->n; }
DType PackedMatrix::type() const { return impl_->type; }

// ---- MatmulPlan ----

struct MatmulPlan::Impl {
  dnnl::matmul::primitive_desc pd;
  dnnl::matmul prim;
  size_t scratch_bytes = 0;
  std::string kernel;
  // Per thread: memory objects whose data handles are re-pointed at every run (no allocation in the loop).
  // Kept in a thread_local table keyed by the plan, since OpenMP thread numbers repeat across the teams of
  // nested regions (batch_parallel.h runs whole parts of a batch inside an outer region).
  struct ThreadState {
    dnnl::stream stream;
    dnnl::memory src, weights, dst, bias, scratch;
  };
};

namespace {

using Key = std::array<int64_t, 13>;

Key key_of(const MatmulSpec& s, bool packed) {
  return Key{s.a.rows, s.a.cols, s.a.row_stride, s.a.col_stride, int64_t(s.a.type), s.b.cols,
             packed ? 0 : s.b.row_stride, packed ? 0 : s.b.col_stride, int64_t(s.b.type), packed,
             s.ldc ? s.ldc : s.b.cols, s.accumulate, s.bias};
}

std::unique_ptr<const MatmulPlan::Impl> new_plan(const MatmulSpec& s, bool packed) {
  const int64_t m = s.a.rows, k = s.a.cols, n = s.b.cols, ldc = s.ldc ? s.ldc : n;
  if (s.b.rows != k) throw ShapeError("matmul: A is " + std::to_string(m) + "x" + std::to_string(k) + ", B has " +
                                      std::to_string(s.b.rows) + " rows");
  const dnnl::memory::desc a = desc_of(s.a);
  const dnnl::memory::desc b = packed ? dnnl::memory::desc({k, n}, to_dnnl(s.b.type), dnnl::memory::format_tag::any)
                                      : desc_of(s.b);
  const dnnl::memory::desc c({m, n}, dt::f32, dims{ldc, 1});
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  if (s.accumulate) {
    dnnl::post_ops po;
    po.append_sum(1.0f);
    attr.set_post_ops(po);
  }
  auto impl = std::make_unique<MatmulPlan::Impl>();
  if (s.bias) {
    const dnnl::memory::desc bias({1, n}, dt::f32, dnnl::memory::format_tag::ab);
    impl->pd = dnnl::matmul::primitive_desc(dnnl::matmul::desc(a, b, bias, c), attr, engine());
  } else {
    impl->pd = dnnl::matmul::primitive_desc(dnnl::matmul::desc(a, b, c), attr, engine());
  }
  impl->prim = dnnl::matmul(impl->pd);
  impl->scratch_bytes = impl->pd.scratchpad_desc().get_size();
  impl->kernel = impl->pd.impl_info_str();
  if (std::getenv("LCDKIT_PRINT_PLANS"))  // debugging: every new plan and the kernel oneDNN chose for it
    std::fprintf(stderr, "matmul plan m%lld k%lld n%lld, A strides (%lld, %lld) %s%s%s: %s\n", (long long)m, (long long)k,
                 (long long)n, (long long)s.a.row_stride, (long long)s.a.col_stride, s.a.type == DType::kBf16 ? "bf16" : "f32",
                 packed ? ", packed B" : "", s.accumulate ? ", +=" : "", impl->kernel.c_str());
  return impl;
}

const MatmulPlan::Impl* make_plan(const MatmulSpec& s, bool packed) {
  return cached_plan<MatmulPlan::Impl>(key_of(s, packed), [&] { return new_plan(s, packed); });
}

}  // namespace

namespace {

// LCDKIT_PROFILE_PLANS=1: the time spent in each plan, printed at exit, largest first, with the median call
// and its rate. The total includes the first calls, whose outputs may touch fresh pages (on a VM ~10 µs per
// 4 KB page fault: a 20 µs product then takes 600 µs); the median is the steady state.
bool profiling() {
  static const bool on = std::getenv("LCDKIT_PROFILE_PLANS") != nullptr;
  return on;
}

struct PlanTimes {
  double flop = 0;               // per call
  std::vector<double> seconds;   // per call
};

void record_time(const MatmulPlan::Impl& p, double seconds) {
  using Table = std::map<std::string, PlanTimes>;
  static std::mutex mutex;
  static Table* stats = [] {
    auto* table = new Table();
    std::atexit([] {
      std::vector<std::pair<double, std::string>> rows;
      double total = 0;
      for (auto& [k, v] : *stats) {
        double sum = 0;
        for (double t : v.seconds) sum += t;
        std::sort(v.seconds.begin(), v.seconds.end());
        const double median = v.seconds[v.seconds.size() / 2];
        char line[160];
        std::snprintf(line, sizeof line, ", %zu calls, median %.1f us (%.0f GFLOP/s)", v.seconds.size(), median * 1e6,
                      v.flop / median * 1e-9);
        rows.emplace_back(sum, k + line);
        total += sum;
      }
      std::sort(rows.rbegin(), rows.rend());
      std::fprintf(stderr, "matmul plans: %.3f s in all\n", total);
      for (size_t i = 0; i < rows.size() && i < 40; ++i) std::fprintf(stderr, "%9.3f s  %s\n", rows[i].first, rows[i].second.c_str());
    });
    return table;
  }();
  const auto src = p.pd.src_desc().dims(), dst = p.pd.dst_desc().dims();
  const std::string key = "m" + std::to_string(src[0]) + " k" + std::to_string(src[1]) + " n" + std::to_string(dst[1]) + " " + p.kernel;
  std::lock_guard<std::mutex> lock(mutex);
  PlanTimes& e = (*stats)[key];
  e.flop = 2.0 * double(src[0]) * double(src[1]) * double(dst[1]);
  e.seconds.push_back(seconds);
}

}  // namespace

MatmulPlan::MatmulPlan(const MatmulSpec& spec) : impl_(make_plan(spec, false)) {}

MatmulPlan::MatmulPlan(const MatmulSpec& spec, const PackedMatrix& b) {
  MatmulSpec s = spec;
  s.b = Layout::row_major(b.rows(), b.cols(), b.type());
  impl_ = make_plan(s, true);
  packed_ = b.impl().operand->in_layout(impl_->pd.weights_desc()).get();
}

const char* MatmulPlan::kernel() const { return impl_ ? impl_->kernel.c_str() : "none"; }

void MatmulPlan::run(const void* a, const void* b, float* c, const float* bias) const {
  const Impl& p = *impl_;
  thread_local std::unordered_map<const Impl*, Impl::ThreadState> states;  // plans live as long as the process
  auto [it, fresh] = states.try_emplace(&p);
  Impl::ThreadState& st = it->second;
  if (fresh) {
    st.stream = dnnl::stream(engine());
    st.src = dnnl::memory(p.pd.src_desc(), engine(), DNNL_MEMORY_NONE);
    st.weights = dnnl::memory(p.pd.weights_desc(), engine(), DNNL_MEMORY_NONE);
    st.dst = dnnl::memory(p.pd.dst_desc(), engine(), DNNL_MEMORY_NONE);
    if (p.pd.bias_desc().get_size()) st.bias = dnnl::memory(p.pd.bias_desc(), engine(), DNNL_MEMORY_NONE);
    st.scratch = dnnl::memory(p.pd.scratchpad_desc(), engine(), DNNL_MEMORY_NONE);
  }
  dnnl_stream_t stream = st.stream.get();
  check(dnnl_memory_set_data_handle_v2(st.src.get(), const_cast<void*>(a), stream), "src handle");
  if (!packed_) check(dnnl_memory_set_data_handle_v2(st.weights.get(), const_cast<void*>(b), stream), "weights handle");
  check(dnnl_memory_set_data_handle_v2(st.dst.get(), c, stream), "dst handle");
  dnnl_memory_t weights = packed_ ? static_cast<dnnl_memory_t>(packed_) : st.weights.get();
  dnnl_exec_arg_t args[5] = {{DNNL_ARG_SRC, st.src.get()}, {DNNL_ARG_WEIGHTS, weights}, {DNNL_ARG_DST, st.dst.get()}};
  int nargs = 3;
  if (p.scratch_bytes) {
    check(dnnl_memory_set_data_handle_v2(st.scratch.get(), dnnl_support::thread_scratch(p.scratch_bytes), stream), "scratchpad handle");
    args[nargs++] = {DNNL_ARG_SCRATCHPAD, st.scratch.get()};
  }
  if (bias) {
    check(dnnl_memory_set_data_handle_v2(st.bias.get(), const_cast<float*>(bias), stream), "bias handle");
    args[nargs++] = {DNNL_ARG_BIAS, st.bias.get()};
  }
  const bool profile = profiling();
  const auto t0 = profile ? std::chrono::steady_clock::now() : std::chrono::steady_clock::time_point();
  // Always on this one thread, also outside a parallel region: some oneDNN kernels (gemm:jit on AVX2) split
  // the reduction among their threads, which would make results depend on the thread count.
  dnnl_support::execute(p.prim, st.stream, nargs, args, false, "matmul");
  if (profile) record_time(p, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
}

}  // namespace lcd::cpu
