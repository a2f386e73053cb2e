// FlatParameters: the trainable parameters' values and gradients in two contiguous buffers (DESIGN.md §8.5).
// Each tensor handed in is re-pointed into the value buffer (its data copied once) and its gradient bound to
// the matching slice of the gradient buffer, so the optimiser, clipping and checkpoints work on flat arrays
// while the model keeps using its own tensors.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "autograd/tensor.h"

namespace lcd {

// Whether an element loop over n parameter values (the sum of batch parts' gradients, the norm, clipping, AdamW)
// is split among the threads. Below 2 Mi values it runs on one thread: such a loop takes well under a
// millisecond, but a parallel region waits at its end for every thread, and on a shared machine a thread that
// the scheduler has set aside comes back only after a time slice. Measured on an AMD EPYC Zen 5 VM, 2 threads,
// LCD-LoRA step at batch 32 (834,560 values), one `yes` beside it: clipping, AdamW and EMA took 14–20 ms in 9
// of 22 steps (0.5–0.8 ms in the others), and 0.8–1.1 ms in every step on one thread; on a quiet machine 0.5 →
// 0.8 ms of a 115 ms step. A whole UNet (4.4 Mi values here) still splits.
inline bool splits_parameter_loop(int64_t n) { return n >= (int64_t(1) << 21); }

class FlatParameters {
 public:
  struct Entry {
    std::string name;  // canonical dotted name (the checkpoint key)
    Tensor tensor;
    int64_t offset;    // into the flat buffers
  };

  FlatParameters() = default;
  // The tensors must be leaves; they become trainable (requires_grad).
  explicit FlatParameters(std::vector<std::pair<std::string, Tensor>> parameters);

  int64_t size() const { return size_; }
  float* values() { return values_.get(); }
  const float* values() const { return values_.get(); }
  float* grads() { return grads_.get(); }
  const float* grads() const { return grads_.get(); }
  const std::vector<Entry>& entries() const { return entries_; }

  // Gradient sums kept in double (null until keep_wide_gradients): parallel_backward adds the sum of its parts
  // here, unrounded, instead of into grads(), so that a sum over processes (train/distributed.h) rounds once,
  // as one process does, whatever the number of processes.
  double* wide_grads() { return wide_grads_.get(); }
  void keep_wide_gradients();

  void zero_grad();  // both buffers
  double grad_norm() const;  // global L2 norm of all gradients, accumulated in double
  // Scales the gradients so their global norm is at most max_norm; returns the norm before clipping.
  double clip_grad_norm(double max_norm);

 private:
  std::vector<Entry> entries_;
  std::shared_ptr<float> values_, grads_;
  std::shared_ptr<double> wide_grads_;
  int64_t size_ = 0;
};

}  // namespace lcd
