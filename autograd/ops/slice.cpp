// slice: x narrowed to [start, start+length) along one axis (a copy); the building block of split/chunk.
// ∂L/∂x = g scattered back into the slab, zero elsewhere.
#include <cstring>

#include "autograd/errors.h"
#include "autograd/op_registry.h"
#include "autograd/ops.h"
#include "autograd/ops/instantiate.h"
#include "autograd/parallel.h"

namespace lcd {
LCD_DIFFERENTIABLE_OP(slice);

namespace {
struct SliceDims {
  int64_t outer, inner, full, start, length;  // full: x's size along the axis
};
}  // namespace

template <typename T>
static TensorT<T> slice_forward(const TensorT<T>& x, const Shape& out_shape, const SliceDims& d) {
  auto y = TensorT<T>::empty(out_shape);
  parallel_for(d.outer, out_shape.numel() > 32768, [&](int64_t o) {
    std::memcpy(y.data() + o * d.length * d.inner, x.data() + (o * d.full + d.start) * d.inner,
                sizeof(T) * d.length * d.inner);
  });
  return y;
}

template <typename T>
static void slice_backward(const TensorT<T>& grad, const TensorT<T>& x, const SliceDims& d) {
  T* gx = grad_buffer(x);
  const int64_t len = d.length * d.inner;
  parallel_for(d.outer, grad.numel() > 32768, [&](int64_t o) {
    T* dst = gx + (o * d.full + d.start) * d.inner;
    const T* src = grad.data() + o * len;
    for (int64_t i = 0; i < len; ++i) dst[i] += src[i];
  });
}

template <typename T>
TensorT<T> slice(const TensorT<T>& x, int axis, int64_t start, int64_t length) {
  const int ax = x.shape().normalize_axis(axis);
  if (start < 0 || length < 0 || start + length > x.size(ax))
    throw ShapeError("slice: [" + std::to_string(start) + ", " + std::to_string(start + length) +
                     ") out of range for axis " + std::to_string(axis) + " of " + x.shape().str());
  SliceDims d{1, 1, x.size(ax), start, length};
  for (int i = 0; i < ax; ++i) d.outer *= x.size(i);
  for (int i = ax + 1; i < x.ndim(); ++i) d.inner *= x.size(i);
  std::vector<int64_t> dims = x.shape().to_vector();
  dims[ax] = length;
  TensorT<T> y = slice_forward(x, Shape(dims), d);
  if (should_record<T>({&x})) record<T>(y, "slice", {&x}, [x, d](const TensorT<T>& g) { slice_backward(g, x, d); });
  return y;
}

#define INSTANTIATE(T) template TensorT<T> slice<T>(const TensorT<T>&, int, int64_t, int64_t);
LCD_FOR_EACH_SCALAR(INSTANTIATE)
}  // namespace lcd
