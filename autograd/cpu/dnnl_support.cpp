// Shared oneDNN plumbing (see dnnl_support.h).
#include "autograd/cpu/dnnl_support.h"

#include <omp.h>

#include <optional>
#include <string>

#include "autograd/cpu/bf16.h"
#include "autograd/errors.h"
#include "autograd/storage.h"

namespace lcd::cpu::dnnl_support {

dnnl::engine& engine() {
  static dnnl::engine e(dnnl::engine::kind::cpu, 0);
  return e;
}

OwnedMemory owned_memory(const dnnl::memory::desc& d) {
  OwnedMemory m;
  m.block = allocate_storage<float>(static_cast<int64_t>((d.get_size() + sizeof(float) - 1) / sizeof(float)), false);
  m.memory = dnnl::memory(d, engine(), m.block.get());
  return m;
}

void check(dnnl_status_t s, const char* what) {
  if (s != dnnl_success) throw Error(std::string("oneDNN: ") + what + " failed (status " + std::to_string(int(s)) + ")");
}

void* thread_scratch(size_t bytes) {
  thread_local std::vector<char> buf;
  if (buf.size() < bytes) buf.resize(bytes + (bytes >> 2) + 64);
  return buf.data();
}

namespace {
void reorder(const dnnl::memory& from, const dnnl::memory& to) {
  dnnl::stream s(engine());
  dnnl::reorder(from, to).execute(s, const_cast<dnnl::memory&>(from), const_cast<dnnl::memory&>(to));
  s.wait();
}

// Winograd weight layouts are made from plain ones only, and nothing is made from them.
bool is_winograd(const dnnl::memory::desc& d) { return d.data.format_kind == dnnl_format_kind_wino; }

// d's dims and type in the plain row-major layout (oihw for convolution weights).
dnnl::memory::desc plain_like(const dnnl::memory::desc& d) {
  const dnnl::memory::dims dims = d.dims();
  dnnl::memory::dims strides(dims.size(), 1);
  for (size_t i = dims.size() - 1; i > 0; --i) strides[i - 1] = strides[i] * dims[i];
  return dnnl::memory::desc(dims, d.data_type(), strides);
}

// `from` in layout d.
OwnedMemory variant_of(const dnnl::memory& from, const dnnl::memory::desc& d) {
  OwnedMemory m = owned_memory(d);
  if (is_winograd(d) && !(from.get_desc() == plain_like(d))) {  // blocked → plain → Winograd
    OwnedMemory plain = owned_memory(plain_like(d));
    reorder(from, plain.memory);
    reorder(plain.memory, m.memory);
  } else {
    reorder(from, m.memory);
  }
  return m;
}

// A dense float32 matrix or tensor without inner blocks (the weights as the layers hold them), rounded to
// bf16 into a buffer of the same layout: one sequential pass. oneDNN's reorder from float32 straight
// into a blocked bf16 layout reads the source in block order, which is slow on weights not in cache (a
// 128×128×3×3 convolution weight, cold, 1 thread, AMD EPYC Zen 5: 182 µs; rounded first, then reordered from
// bf16: 21 + 56 µs; in the bf16 diffusion step, reorders went from 14 to 4 ms of thread time a step). to_bf16
// rounds as the reorder does (nearest even), so the result is the same.
std::optional<OwnedMemory> rounded_dense(const dnnl::memory& src) {
  const dnnl::memory::desc d = src.get_desc();
  const dnnl_memory_desc_t& c = d.data;
  if (d.data_type() != dnnl::memory::data_type::f32 || c.format_kind != dnnl_blocked ||
      c.format_desc.blocking.inner_nblks != 0 || c.offset0 != 0)
    return std::nullopt;
  const dnnl::memory::dims dims = d.dims();
  int64_t n = 1;
  for (int64_t x : dims) n *= x;
  if (static_cast<size_t>(n) * sizeof(float) != d.get_size()) return std::nullopt;  // gaps between rows
  const dnnl::memory::dims strides(c.format_desc.blocking.strides, c.format_desc.blocking.strides + c.ndims);
  OwnedMemory m = owned_memory(dnnl::memory::desc(dims, dnnl::memory::data_type::bf16, strides));
  to_bf16(static_cast<const float*>(src.get_data_handle()), static_cast<bf16*>(m.memory.get_data_handle()), n);
  return m;
}
}  // namespace

ReorderedOperand::ReorderedOperand(const dnnl::memory& src, const dnnl::memory::desc& d) {
  // A Winograd layout keeps a plain copy first, so that other layouts can still be made from variants_[0].
  const dnnl::memory::desc first = is_winograd(d) ? plain_like(d) : d;
  OwnedMemory m = owned_memory(first);
  const std::optional<OwnedMemory> rounded =
      first.data_type() == dnnl::memory::data_type::bf16 ? rounded_dense(src) : std::nullopt;
  reorder(rounded ? rounded->memory : src, m.memory);
  variants_.push_back(std::move(m));
  if (is_winograd(d)) variants_.push_back(variant_of(variants_.front().memory, d));
}

const dnnl::memory* ReorderedOperand::find(const dnnl::memory::desc& d) const {
  for (const auto& v : variants_)
    if (v.memory.get_desc() == d) return &v.memory;
  return nullptr;
}

const dnnl::memory& ReorderedOperand::in_layout(const dnnl::memory::desc& d) {
  dnnl::memory first;  // variants_[0], which never changes (a handle: shares the memory)
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (const dnnl::memory* m = find(d)) return *m;
    first = variants_.front().memory;
  }
  OwnedMemory made = variant_of(first, d);
  std::lock_guard<std::mutex> lock(mutex_);
  if (const dnnl::memory* m = find(d)) return *m;  // another thread's came first: this one is dropped
  variants_.push_back(std::move(made));
  return variants_.back().memory;
}

void execute(const dnnl::primitive& p, dnnl::stream& stream, int nargs, const dnnl_exec_arg_t* args, bool own_threads,
             const char* what) {
  const int threads = omp_in_parallel() ? 1 : omp_get_max_threads();
  const bool pin = threads > 1 && !own_threads;
  if (pin) omp_set_num_threads(1);
  const dnnl_status_t status = dnnl_primitive_execute(p.get(), stream.get(), nargs, args);
  if (pin) omp_set_num_threads(threads);
  check(status, what);
  check(dnnl_stream_wait(stream.get()), "stream wait");
}

}  // namespace lcd::cpu::dnnl_support
