// FlatParameters: binding tensors into flat value and gradient buffers; gradient norm and clipping.
#include "autograd/flat_parameters.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "autograd/errors.h"
#include "autograd/parallel.h"

namespace lcd {

FlatParameters::FlatParameters(std::vector<std::pair<std::string, Tensor>> parameters) {
  for (auto& [name, t] : parameters) {
    if (!t.is_leaf()) throw AutogradError("FlatParameters: parameter " + name + " is not a leaf tensor");
    entries_.push_back({name, t, size_});
    size_ += t.numel();
  }
  values_ = allocate_storage<float>(size_, true);
  grads_ = allocate_storage<float>(size_, true);
  for (auto& e : entries_) {
    std::memcpy(values_.get() + e.offset, e.tensor.data(), sizeof(float) * e.tensor.numel());
    auto& impl = *e.tensor.impl();
    impl.data = std::shared_ptr<float>(values_, values_.get() + e.offset);  // aliases the flat buffer
    impl.grad = std::shared_ptr<float>(grads_, grads_.get() + e.offset);
    impl.requires_grad = true;
    impl.packable = false;  // written through the flat buffer from now on: no kernel-side copies
    impl.kernel_cache.reset();
  }
}

void FlatParameters::keep_wide_gradients() {
  if (!wide_grads_ && size_) wide_grads_ = allocate_storage<double>(size_, true);
}

void FlatParameters::zero_grad() {
  if (size_) std::memset(grads_.get(), 0, sizeof(float) * size_);
  if (wide_grads_) std::memset(wide_grads_.get(), 0, sizeof(double) * size_);
}

double FlatParameters::grad_norm() const {
  // Per block of 64 Ki values in parallel, the blocks' sums added in order: the same result with any number
  // of threads.
  constexpr int64_t kBlock = int64_t(1) << 16;
  const int64_t blocks = (size_ + kBlock - 1) / kBlock;
  std::vector<double> partial(static_cast<size_t>(blocks));
  const float* g = grads_.get();
  parallel_for(blocks, blocks > 1 && splits_parameter_loop(size_), [&](int64_t b) {
    // Eight running sums (value i into sum i mod 8), added in order at the end: eight independent chains the
    // compiler vectorises, where one chain waits on each add's latency. A fixed order all the same.
    constexpr int kLanes = 8;
    double lane[kLanes] = {};
    const int64_t begin = b * kBlock, end = std::min(size_, (b + 1) * kBlock);
    int64_t i = begin;
    for (; i + kLanes <= end; i += kLanes)
      for (int j = 0; j < kLanes; ++j) lane[j] += static_cast<double>(g[i + j]) * g[i + j];
    for (; i < end; ++i) lane[0] += static_cast<double>(g[i]) * g[i];
    double acc = 0;
    for (double s : lane) acc += s;
    partial[static_cast<size_t>(b)] = acc;
  });
  double acc = 0;
  for (double p : partial) acc += p;
  return std::sqrt(acc);
}

double FlatParameters::clip_grad_norm(double max_norm) {
  const double norm = grad_norm();
  // As torch.nn.utils.clip_grad_norm_: scale by max_norm / (norm + 1e-6) when that is below 1.
  const double factor = max_norm / (norm + 1e-6);
  if (factor < 1.0) {
    float* g = grads_.get();
    const float f = static_cast<float>(factor);
    parallel_for(size_, splits_parameter_loop(size_), [&](int64_t i) {
      g[i] *= f;
    });
  }
  return norm;
}

}  // namespace lcd
