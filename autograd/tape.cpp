// The tape: recording, the iterative reverse pass, and iterative teardown of unreferenced graphs.
#include "autograd/tape.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <unordered_set>
#include <utility>

#include "autograd/broadcast.h"
#include "autograd/errors.h"

namespace lcd {

namespace {
thread_local bool g_grad_enabled = true;

// Graph teardown without recursion: destroying a node destroys its inputs, whose destructors would
// destroy their nodes, and so on down a chain as long as the network. Nodes are queued instead.
template <typename T>
struct NodeReaper {
  bool draining = false;
  std::vector<std::shared_ptr<Node<T>>> pending;
};
template <typename T>
NodeReaper<T>& reaper() {
  thread_local NodeReaper<T> r;
  return r;
}
}  // namespace

template <typename T>
TensorImpl<T>::~TensorImpl() {
  if (!node) return;
  auto& r = reaper<T>();
  r.pending.push_back(std::move(node));
  if (r.draining) return;
  r.draining = true;
  while (!r.pending.empty()) {
    std::shared_ptr<Node<T>> n = std::move(r.pending.back());
    r.pending.pop_back();
    n.reset();  // may queue more nodes through the destructors of its inputs
  }
  r.draining = false;
}

bool grad_enabled() { return g_grad_enabled; }
NoGradGuard::NoGradGuard() : previous_(g_grad_enabled) { g_grad_enabled = false; }
NoGradGuard::~NoGradGuard() { g_grad_enabled = previous_; }
GradModeGuard::GradModeGuard(bool enabled) : previous_(g_grad_enabled) { g_grad_enabled = enabled; }
GradModeGuard::~GradModeGuard() { g_grad_enabled = previous_; }

namespace {
struct Redirect {
  const float* base = nullptr;
  int64_t size = 0;
  float* target = nullptr;
  const std::vector<int64_t>* spans = nullptr;  // the parameters' start offsets (GradientRedirect)
  std::vector<uint8_t> reached;                 // per span

  // The index of the span holding offset o.
  size_t span_of(int64_t o) const {
    return static_cast<size_t>(std::upper_bound(spans->begin(), spans->end(), o) - spans->begin()) - 1;
  }
  int64_t span_end(size_t i) const { return i + 1 < spans->size() ? (*spans)[i + 1] : size; }
  void zero_span(size_t i) {
    std::memset(target + (*spans)[i], 0, sizeof(float) * static_cast<size_t>(span_end(i) - (*spans)[i]));
    reached[i] = 1;
  }
};
thread_local Redirect g_redirect;

// The redirected gradient of the leaf whose flat-buffer gradient is `grad`, or null when not redirected.
float* redirected(const float* grad) {
  if (!g_redirect.target || !grad) return nullptr;
  const std::ptrdiff_t offset = grad - g_redirect.base;
  return offset >= 0 && offset < g_redirect.size ? g_redirect.target + offset : nullptr;
}
}  // namespace

GradientRedirect::GradientRedirect(const float* base, int64_t size, float* target, const std::vector<int64_t>& spans) {
  if (spans.empty() || spans.front() != 0 || !std::is_sorted(spans.begin(), spans.end()) || spans.back() > size)
    throw Error("GradientRedirect: spans must start at 0, ascending, inside the buffer");
  g_redirect = {base, size, target, &spans, std::vector<uint8_t>(spans.size(), 0)};
}
void GradientRedirect::finish() {
  for (size_t i = 0; i < g_redirect.reached.size(); ++i)
    if (!g_redirect.reached[i]) g_redirect.zero_span(i);
}
GradientRedirect::~GradientRedirect() { g_redirect = {}; }

template <typename T>
bool should_record(std::initializer_list<const TensorT<T>*> inputs) {
  if (!g_grad_enabled) return false;
  for (const TensorT<T>* x : inputs)
    if (x && needs_grad(*x)) return true;
  return false;
}

template <typename T>
static void record_impl(TensorT<T>& output, const char* op_name, const std::vector<const TensorT<T>*>& inputs,
                        std::function<void(const TensorT<T>&)> backward) {
  if (!g_grad_enabled) return;
  auto node = std::make_shared<Node<T>>();
  for (const TensorT<T>* x : inputs)
    if (x && needs_grad(*x)) node->inputs.push_back(x->impl());
  if (node->inputs.empty()) return;
  node->op_name = op_name;
  node->backward = std::move(backward);
  output.impl()->requires_grad = true;
  output.impl()->node = std::move(node);
}

template <typename T>
void record(TensorT<T>& output, const char* op_name, std::initializer_list<const TensorT<T>*> inputs,
            std::function<void(const TensorT<T>&)> backward) {
  record_impl(output, op_name, std::vector<const TensorT<T>*>(inputs), std::move(backward));
}

template <typename T>
void record(TensorT<T>& output, const char* op_name, const std::vector<TensorT<T>>& inputs,
            std::function<void(const TensorT<T>&)> backward) {
  std::vector<const TensorT<T>*> ptrs;
  for (const auto& x : inputs) ptrs.push_back(&x);
  record_impl(output, op_name, ptrs, std::move(backward));
}

template <typename T>
T* grad_buffer(const TensorT<T>& x) {
  auto& impl = *x.impl();
  if constexpr (std::is_same_v<T, float>) {
    if (float* r = redirected(impl.grad.get())) {
      const size_t i = g_redirect.span_of(r - g_redirect.target);
      if (!g_redirect.reached[i]) g_redirect.zero_span(i);
      return r;
    }
  }
  if (!impl.grad) impl.grad = allocate_storage<T>(impl.shape.numel(), true);
  return impl.grad.get();
}

template <typename T>
T* grad_buffer_to_write(const TensorT<T>& x, bool* fresh) {
  auto& impl = *x.impl();
  if constexpr (std::is_same_v<T, float>) {
    float* r = redirected(impl.grad.get());
    if (r) {  // a span not reached yet, which x covers whole: written, not zeroed
      const int64_t offset = r - g_redirect.target;
      const size_t i = g_redirect.span_of(offset);
      if (!g_redirect.reached[i] && offset == (*g_redirect.spans)[i] &&
          g_redirect.span_end(i) - offset == impl.shape.numel()) {
        g_redirect.reached[i] = 1;
        *fresh = true;
        return r;
      }
    }
  }
  *fresh = !impl.grad;
  if (!*fresh) return grad_buffer(x);
  impl.grad = allocate_storage<T>(impl.shape.numel(), false);
  return impl.grad.get();
}

template <typename T>
void accumulate_grad(const TensorT<T>& x, const TensorT<T>& g) {
  if (!needs_grad(x)) return;
  if (g.shape() == x.shape()) {
    bool fresh = false;
    T* dst = grad_buffer_to_write(x, &fresh);
    if (fresh) {  // the first gradient: a copy, not a zero fill and an add
      std::memcpy(dst, g.data(), sizeof(T) * g.numel());
      return;
    }
    reduce_to_shape_accumulate(g, x.shape(), dst);  // same shape: the plain elementwise add
  } else {
    reduce_to_shape_accumulate(g, x.shape(), grad_buffer(x));
  }
}

template <typename T>
void run_backward(const TensorT<T>& root, const TensorT<T>& seed) {
  if (!root.requires_grad()) throw AutogradError("backward() on a tensor that does not require grad");
  check_shape(seed, root.shape(), "backward seed");

  // Reverse topological order by an iterative depth-first search (post-order). The order owns each tensor
  // until it is consumed, since freeing a node may drop the last other reference to its inputs.
  std::vector<std::shared_ptr<TensorImpl<T>>> order;
  std::unordered_set<TensorImpl<T>*> visited;
  std::vector<std::pair<std::shared_ptr<TensorImpl<T>>, size_t>> stack;
  stack.emplace_back(root.impl(), 0);
  visited.insert(root.impl().get());
  while (!stack.empty()) {
    TensorImpl<T>* impl = stack.back().first.get();
    size_t& next = stack.back().second;
    if (impl->node && next < impl->node->inputs.size()) {
      std::shared_ptr<TensorImpl<T>> child = impl->node->inputs[next++];
      if (visited.insert(child.get()).second) stack.emplace_back(std::move(child), 0);
    } else {
      order.push_back(std::move(stack.back().first));
      stack.pop_back();
    }
  }

  accumulate_grad(root, seed);
  NoGradGuard no_grad;  // backward functions are not themselves recorded
  for (auto it = order.rbegin(); it != order.rend(); ++it) {
    std::shared_ptr<TensorImpl<T>> impl = std::move(*it);
    if (!impl->node) continue;  // a leaf: its gradient stays
    std::shared_ptr<Node<T>> node = std::move(impl->node);
    if (impl->grad) {
      TensorT<T> g = TensorT<T>::from_storage(impl->shape, impl->grad);
      node->backward(g);
    }
    // Consumed: free this intermediate's gradient and the node (and with it the tensors it saved).
    impl->grad.reset();
    impl->requires_grad = false;
    node.reset();
  }
}

template struct TensorImpl<float>;
template struct TensorImpl<double>;
template bool should_record<float>(std::initializer_list<const TensorT<float>*>);
template bool should_record<double>(std::initializer_list<const TensorT<double>*>);
template void record<float>(TensorT<float>&, const char*, std::initializer_list<const TensorT<float>*>,
                            std::function<void(const TensorT<float>&)>);
template void record<double>(TensorT<double>&, const char*, std::initializer_list<const TensorT<double>*>,
                             std::function<void(const TensorT<double>&)>);
template void record<float>(TensorT<float>&, const char*, const std::vector<TensorT<float>>&,
                            std::function<void(const TensorT<float>&)>);
template void record<double>(TensorT<double>&, const char*, const std::vector<TensorT<double>>&,
                             std::function<void(const TensorT<double>&)>);
template float* grad_buffer<float>(const TensorT<float>&);
template double* grad_buffer<double>(const TensorT<double>&);
template float* grad_buffer_to_write<float>(const TensorT<float>&, bool*);
template double* grad_buffer_to_write<double>(const TensorT<double>&, bool*);
template void accumulate_grad<float>(const TensorT<float>&, const TensorT<float>&);
template void accumulate_grad<double>(const TensorT<double>&, const TensorT<double>&);
template void run_backward<float>(const TensorT<float>&, const TensorT<float>&);
template void run_backward<double>(const TensorT<double>&, const TensorT<double>&);

}  // namespace lcd
