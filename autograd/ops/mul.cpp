// mul: y = a ⊙ b with broadcasting. ∂L/∂a = g ⊙ b, ∂L/∂b = g ⊙ a.
#include "autograd/op_registry.h"
#include "autograd/ops.h"
#include "autograd/ops/elementwise.h"
#include "autograd/ops/instantiate.h"

namespace lcd {
LCD_DIFFERENTIABLE_OP(mul);

template <typename T>
static TensorT<T> mul_forward(const TensorT<T>& a, const TensorT<T>& b) {
  return map_binary(a, b, [](T x, T y) { return x * y; });
}

template <typename T>
static void mul_backward(const TensorT<T>& grad, const TensorT<T>& a, const TensorT<T>& b) {
  auto times = [](T g, T other) { return g * other; };
  if (needs_grad(a)) accumulate_grad(a, map_binary(grad, b, times));
  if (needs_grad(b)) accumulate_grad(b, map_binary(grad, a, times));
}

template <typename T>
TensorT<T> mul(const TensorT<T>& a, const TensorT<T>& b) {
  TensorT<T> y = mul_forward(a, b);
  if (should_record<T>({&a, &b}))
    record<T>(y, "mul", {&a, &b}, [a, b](const TensorT<T>& g) { mul_backward(g, a, b); });
  return y;
}

#define INSTANTIATE(T) template TensorT<T> mul<T>(const TensorT<T>&, const TensorT<T>&);
LCD_FOR_EACH_SCALAR(INSTANTIATE)
}  // namespace lcd
