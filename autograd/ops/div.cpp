// div: y = a / b with broadcasting. ∂L/∂a = g / b, ∂L/∂b = −g·a / b².
#include "autograd/op_registry.h"
#include "autograd/ops.h"
#include "autograd/ops/elementwise.h"
#include "autograd/ops/instantiate.h"

namespace lcd {
LCD_DIFFERENTIABLE_OP(div);

template <typename T>
static TensorT<T> div_forward(const TensorT<T>& a, const TensorT<T>& b) {
  return map_binary(a, b, [](T x, T y) { return x / y; });
}

template <typename T>
static void div_backward(const TensorT<T>& grad, const TensorT<T>& a, const TensorT<T>& b) {
  if (needs_grad(a)) accumulate_grad(a, map_binary(grad, b, [](T g, T y) { return g / y; }));
  if (needs_grad(b)) {
    // −g·a/b² = −g·y/b, with y = a/b recomputed in the broadcast shape
    auto ga = map_binary(grad, a, [](T g, T x) { return -g * x; });
    accumulate_grad(b, map_binary(ga, b, [](T v, T y) { return v / (y * y); }));
  }
}

template <typename T>
TensorT<T> div(const TensorT<T>& a, const TensorT<T>& b) {
  TensorT<T> y = div_forward(a, b);
  if (should_record<T>({&a, &b}))
    record<T>(y, "div", {&a, &b}, [a, b](const TensorT<T>& g) { div_backward(g, a, b); });
  return y;
}

#define INSTANTIATE(T) template TensorT<T> div<T>(const TensorT<T>&, const TensorT<T>&);
LCD_FOR_EACH_SCALAR(INSTANTIATE)
}  // namespace lcd
