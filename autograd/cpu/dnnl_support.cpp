// Shared oneDNN plumbing (see dnnl_support.h).
#include "autograd/cpu/dnnl_support.h"

#include <omp.h>

#include <string>

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
}  // namespace

ReorderedOperand::ReorderedOperand(const dnnl::memory& src, const dnnl::memory::desc& d) {
  // A Winograd layout keeps a plain copy first, so that other layouts can still be made from variants_[0].
  const dnnl::memory::desc first = is_winograd(d) ? plain_like(d) : d;
  OwnedMemory m = owned_memory(first);
  reorder(src, m.memory);
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
