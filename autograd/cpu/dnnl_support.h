// What the oneDNN-backed kernels (matmul.cpp, convolution.cpp) share: the engine, memory in lcdkit's
// recycled storage, per-thread scratchpads, status checks, and operands reordered once into the layouts
// their primitives ask for. Internal to autograd/cpu.
#pragma once
#include <dnnl.h>

#include <dnnl.hpp>
#include <deque>
#include <memory>
#include <mutex>
#include <vector>

#include "autograd/cpu/matmul.h"

namespace lcd::cpu::dnnl_support {

dnnl::engine& engine();

// lcdkit's operand type as oneDNN names it.
inline dnnl::memory::data_type to_dnnl(DType t) {
  return t == DType::kBf16 ? dnnl::memory::data_type::bf16 : dnnl::memory::data_type::f32;
}

// Memory of `d` in lcdkit's tensor storage (autograd/storage.h), whose freed large blocks are reused: an
// operand reordered for one call only then takes a recycled block instead of fresh pages, which on a VM
// cost more to fault in than the reorder itself.
struct OwnedMemory {
  std::shared_ptr<float> block;
  dnnl::memory memory;
};
OwnedMemory owned_memory(const dnnl::memory::desc& d);

void check(dnnl_status_t s, const char* what);

// Scratch memory for oneDNN (user-managed scratchpad), one growing buffer per thread: a primitive run by
// several threads at once must never share one.
void* thread_scratch(size_t bytes);

// An operand copied once into the layout a primitive asked for; other primitives of the same operand may
// ask for other layouts, each reordered from the first on request (through a plain copy for a Winograd
// layout, which oneDNN makes from plain layouts only; a Winograd layout asked for first keeps a plain copy
// beside it). Read by any thread.
class ReorderedOperand {
 public:
  // Reorders `src` (in user memory) into layout `d`.
  ReorderedOperand(const dnnl::memory& src, const dnnl::memory::desc& d);
  // The operand in layout `d`, made on first request. Made outside the lock: threads asking for the same new
  // layout at once (batch parts in step) each make it rather than sleep on the lock, and the first one kept.
  const dnnl::memory& in_layout(const dnnl::memory::desc& d);

 private:
  const dnnl::memory* find(const dnnl::memory::desc& d) const;  // callers hold mutex_
  std::mutex mutex_;
  // variants_[0]: the first layout asked for, never a Winograd one. A deque: references to its variants stay
  // valid while another thread adds one.
  std::deque<OwnedMemory> variants_;
};

// Runs a primitive on the calling thread's stream, with the threads the caller decides (1 inside an OpenMP
// region; oneDNN's own team outside, when `own_threads`).
void execute(const dnnl::primitive& p, dnnl::stream& stream, int nargs, const dnnl_exec_arg_t* args, bool own_threads,
             const char* what);

}  // namespace lcd::cpu::dnnl_support
