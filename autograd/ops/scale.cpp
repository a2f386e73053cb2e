// scale: y = factor·x + shift. ∂L/∂x = factor·g.
#include "autograd/op_registry.h"
#include "autograd/ops.h"
#include "autograd/ops/elementwise.h"
#include "autograd/ops/instantiate.h"

namespace lcd {
LCD_DIFFERENTIABLE_OP(scale);

template <typename T>
static TensorT<T> scale_forward(const TensorT<T>& x, T factor, T shift) {
  return map_unary(x, [=](T v) { return factor * v + shift; });
}

template <typename T>
static void scale_backward(const TensorT<T>& grad, const TensorT<T>& x, T factor) {
  accumulate_grad(x, map_unary(grad, [=](T g) { return factor * g; }));
}

template <typename T>
TensorT<T> scale(const TensorT<T>& x, double factor, double shift) {
  const T f = static_cast<T>(factor);
  TensorT<T> y = scale_forward(x, f, static_cast<T>(shift));
  if (should_record<T>({&x})) record<T>(y, "scale", {&x}, [x, f](const TensorT<T>& g) { scale_backward(g, x, f); });
  return y;
}

#define INSTANTIATE(T) template TensorT<T> scale<T>(const TensorT<T>&, double, double);
LCD_FOR_EACH_SCALAR(INSTANTIATE)
}  // namespace lcd
