// concat: joins tensors along one axis (all other axes equal). ∂L/∂x_i = the matching slab of g.
#include <cstring>

#include "autograd/errors.h"
#include "autograd/op_registry.h"
#include "autograd/ops.h"
#include "autograd/ops/instantiate.h"
#include "autograd/parallel.h"

namespace lcd {
LCD_DIFFERENTIABLE_OP(concat);

// Elements before `axis` (outer) and after it (inner) for shape s.
static void outer_inner(const Shape& s, int axis, int64_t* outer, int64_t* inner) {
  *outer = 1;
  *inner = 1;
  for (int i = 0; i < axis; ++i) *outer *= s[i];
  for (int i = axis + 1; i < s.rank(); ++i) *inner *= s[i];
}

template <typename T>
static TensorT<T> concat_forward(const std::vector<TensorT<T>>& xs, int axis) {
  std::vector<int64_t> dims = xs[0].shape().to_vector();
  int64_t total = 0;
  for (const auto& x : xs) total += x.size(axis);
  dims[axis] = total;
  auto y = TensorT<T>::empty(Shape(dims));
  int64_t outer, inner;
  outer_inner(y.shape(), axis, &outer, &inner);
  int64_t offset = 0;
  for (const auto& x : xs) {
    const int64_t len = x.size(axis) * inner;
    parallel_for(outer, outer * len > 32768, [&](int64_t o) {
      std::memcpy(y.data() + o * total * inner + offset, x.data() + o * len, sizeof(T) * len);
    });
    offset += len;
  }
  return y;
}

template <typename T>
static void concat_backward(const TensorT<T>& grad, const std::vector<TensorT<T>>& xs, int axis) {
  int64_t outer, inner;
  outer_inner(grad.shape(), axis, &outer, &inner);
  const int64_t total = grad.size(axis);
  int64_t offset = 0;
  for (const auto& x : xs) {
    const int64_t len = x.size(axis) * inner;
    if (needs_grad(x)) {
      T* gx = grad_buffer(x);
      parallel_for(outer, outer * len > 32768, [&](int64_t o) {
        for (int64_t i = 0; i < len; ++i) gx[o * len + i] += grad.data()[o * total * inner + offset + i];
      });
    }
    offset += len;
  }
}

template <typename T>
TensorT<T> concat(const std::vector<TensorT<T>>& xs, int axis) {
  if (xs.empty()) throw ShapeError("concat: no tensors");
  const int ax = xs[0].shape().normalize_axis(axis);
  for (const auto& x : xs) {
    bool ok = x.ndim() == xs[0].ndim();
    for (int i = 0; ok && i < x.ndim(); ++i) ok = i == ax || x.size(i) == xs[0].size(i);
    if (!ok) throw ShapeError("concat: " + x.shape().str() + " does not fit " + xs[0].shape().str() +
                              " along axis " + std::to_string(axis));
  }
  TensorT<T> y = concat_forward(xs, ax);
  record<T>(y, "concat", xs, [xs, ax](const TensorT<T>& g) { concat_backward(g, xs, ax); });
  return y;
}

#define INSTANTIATE(T) template TensorT<T> concat<T>(const std::vector<TensorT<T>>&, int);
LCD_FOR_EACH_SCALAR(INSTANTIATE)
}  // namespace lcd
