// The reverse-mode tape: ops record a Node on their output; backward() walks the nodes in reverse
// topological order (iteratively), calls each node's backward function, accumulates gradients, and frees
// every node and intermediate gradient as soon as it is consumed. Under NoGradGuard nothing is recorded.
#pragma once
#include <functional>
#include <initializer_list>
#include <memory>
#include <vector>

#include "autograd/tensor.h"

namespace lcd {

template <typename T>
struct Node {
  const char* op_name = "";
  // Inputs whose gradient this node produces (only those that require grad): the edges of the graph.
  std::vector<std::shared_ptr<TensorImpl<T>>> inputs;
  // Receives d(loss)/d(output) and accumulates into the inputs' gradients (accumulate_grad / grad_buffer).
  std::function<void(const TensorT<T>& grad_output)> backward;
};

// Whether ops record on the tape in this thread.
bool grad_enabled();

// Scoped no-grad mode: ops record nothing and save nothing (teacher, EMA target, sampling).
class NoGradGuard {
 public:
  NoGradGuard();
  ~NoGradGuard();
  NoGradGuard(const NoGradGuard&) = delete;
  NoGradGuard& operator=(const NoGradGuard&) = delete;

 private:
  bool previous_;
};

// Scoped grad mode set to a given value (worker threads take their caller's mode).
class GradModeGuard {
 public:
  explicit GradModeGuard(bool enabled);
  ~GradModeGuard();
  GradModeGuard(const GradModeGuard&) = delete;
  GradModeGuard& operator=(const GradModeGuard&) = delete;

 private:
  bool previous_;
};

// While alive on a thread, gradients that would accumulate into [base, base + size) (a flat gradient buffer,
// autograd/flat_parameters.h) go to the same offsets of `target` instead: each part of a batch-parallel
// backward (autograd/batch_parallel.h) gets a private buffer.
//
// `spans` are the sorted start offsets of the parameters in the buffer, so that `target` may start uninitialised:
// a parameter's span is zeroed when a kernel first adds into it, or left to a kernel that writes it whole
// (grad_buffer_to_write), and finish() zeroes the spans no gradient reached. This saves a zero fill of the
// whole buffer per part and the trip to memory that comes with it (a full UNet's 17 MB, four parts a step).
class GradientRedirect {
 public:
  GradientRedirect(const float* base, int64_t size, float* target, const std::vector<int64_t>& spans);
  ~GradientRedirect();
  void finish();  // zeroes the spans not reached; the target is then complete
  GradientRedirect(const GradientRedirect&) = delete;
  GradientRedirect& operator=(const GradientRedirect&) = delete;
};

// True when grad mode is on and x needs a gradient: the test every op's backward uses to skip work.
template <typename T>
inline bool needs_grad(const TensorT<T>& x) {
  return x.defined() && x.requires_grad();
}

// True when an op with these inputs must record a node.
template <typename T>
bool should_record(std::initializer_list<const TensorT<T>*> inputs);

// Records `op_name` producing `output` from `inputs` if should_record(); the backward function captures
// whatever it needs (inputs, saved results) by value.
template <typename T>
void record(TensorT<T>& output, const char* op_name, std::initializer_list<const TensorT<T>*> inputs,
            std::function<void(const TensorT<T>& grad_output)> backward);
template <typename T>
void record(TensorT<T>& output, const char* op_name, const std::vector<TensorT<T>>& inputs,
            std::function<void(const TensorT<T>& grad_output)> backward);

// The gradient buffer of x (allocated zero-filled on first use); kernels add into it.
template <typename T>
T* grad_buffer(const TensorT<T>& x);

// For a kernel that can either add into x's gradient or write all of it: the buffer, and *fresh = true when
// x had no gradient yet, in which case the buffer is uninitialised and the caller must write every element
// (no zero fill followed by an add). Otherwise the same buffer as grad_buffer, to add into.
template <typename T>
T* grad_buffer_to_write(const TensorT<T>& x, bool* fresh);

// Adds g into x's gradient. This is the one place where a broadcast gradient is summed back to x's shape.
template <typename T>
void accumulate_grad(const TensorT<T>& x, const TensorT<T>& g);

// Runs the reverse pass from `root` seeded with `seed` (same shape as root).
template <typename T>
void run_backward(const TensorT<T>& root, const TensorT<T>& seed);

}  // namespace lcd
