// reshape: a view of the same data with another shape (numel unchanged). ∂L/∂x = g viewed in x's shape.
#include "autograd/errors.h"
#include "autograd/op_registry.h"
#include "autograd/ops.h"
#include "autograd/ops/instantiate.h"

namespace lcd {
LCD_DIFFERENTIABLE_OP(reshape);

template <typename T>
static TensorT<T> reshape_forward(const TensorT<T>& x, const Shape& shape) {
  return TensorT<T>::from_storage(shape, x.storage());
}

template <typename T>
static void reshape_backward(const TensorT<T>& grad, const TensorT<T>& x) {
  accumulate_grad(x, TensorT<T>::from_storage(x.shape(), grad.storage()));
}

template <typename T>
TensorT<T> reshape(const TensorT<T>& x, const Shape& shape) {
  if (shape.numel() != x.numel())
    throw ShapeError("reshape: cannot view " + x.shape().str() + " as " + shape.str());
  TensorT<T> y = reshape_forward(x, shape);
  if (should_record<T>({&x})) record<T>(y, "reshape", {&x}, [x](const TensorT<T>& g) { reshape_backward(g, x); });
  return y;
}

template <typename T>
TensorT<T> reshape(const TensorT<T>& x, const std::vector<int64_t>& dims) {
  std::vector<int64_t> d = dims;
  int64_t known = 1;
  int infer = -1;
  for (size_t i = 0; i < d.size(); ++i) {
    if (d[i] == -1) {
      if (infer >= 0) throw ShapeError("reshape: more than one -1 in the target shape");
      infer = static_cast<int>(i);
    } else {
      known *= d[i];
    }
  }
  if (infer >= 0) {
    if (known == 0 || x.numel() % known != 0)
      throw ShapeError("reshape: cannot infer -1 when viewing " + x.shape().str());
    d[infer] = x.numel() / known;
  }
  return reshape(x, Shape(d));
}

#define INSTANTIATE(T)                                            \
  template TensorT<T> reshape<T>(const TensorT<T>&, const Shape&); \
  template TensorT<T> reshape<T>(const TensorT<T>&, const std::vector<int64_t>&);
LCD_FOR_EACH_SCALAR(INSTANTIATE)
}  // namespace lcd
