// sub: y = a − b with broadcasting. ∂y/∂a = 1, ∂y/∂b = −1.
#include "autograd/op_registry.h"
#include "autograd/ops.h"
#include "autograd/ops/elementwise.h"
#include "autograd/ops/instantiate.h"

namespace lcd {
LCD_DIFFERENTIABLE_OP(sub);

template <typename T>
static TensorT<T> sub_forward(const TensorT<T>& a, const TensorT<T>& b) {
  return map_binary(a, b, [](T x, T y) { return x - y; });
}

template <typename T>
static void sub_backward(const TensorT<T>& grad, const TensorT<T>& a, const TensorT<T>& b) {
  accumulate_grad(a, grad);
  if (needs_grad(b)) accumulate_grad(b, map_unary(grad, [](T g) { return -g; }));
}

template <typename T>
TensorT<T> sub(const TensorT<T>& a, const TensorT<T>& b) {
  TensorT<T> y = sub_forward(a, b);
  if (should_record<T>({&a, &b}))
    record<T>(y, "sub", {&a, &b}, [a, b](const TensorT<T>& g) { sub_backward(g, a, b); });
  return y;
}

#define INSTANTIATE(T) template TensorT<T> sub<T>(const TensorT<T>&, const TensorT<T>&);
LCD_FOR_EACH_SCALAR(INSTANTIATE)
}  // namespace lcd
