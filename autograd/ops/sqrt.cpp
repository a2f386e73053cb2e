// sqrt: y = √x, ∂y/∂x = 1/(2y).
#include <cmath>

#include "autograd/op_registry.h"
#include "autograd/ops.h"
#include "autograd/ops/elementwise.h"
#include "autograd/ops/instantiate.h"

namespace lcd {
LCD_DIFFERENTIABLE_OP(sqrt);

template <typename T>
static TensorT<T> sqrt_forward(const TensorT<T>& x) {
  return map_unary(x, [](T v) -> T { return std::sqrt(v); });
}

// g: ∂L/∂y, x: the input, y: the saved output
template <typename T>
static void sqrt_backward(const TensorT<T>& grad, const TensorT<T>& x, const TensorT<T>& y) {
  accumulate_grad(x, map_ternary(grad, x, y, [](T g, T v, T w) -> T { return g / (T(2) * w); }));
}

template <typename T>
TensorT<T> sqrt(const TensorT<T>& x) {
  TensorT<T> y = sqrt_forward(x);
  if (should_record<T>({&x}))
    record<T>(y, "sqrt", {&x}, [x, y = y.detach()](const TensorT<T>& g) { sqrt_backward(g, x, y); });
  return y;
}

#define INSTANTIATE(T) template TensorT<T> sqrt<T>(const TensorT<T>&);
LCD_FOR_EACH_SCALAR(INSTANTIATE)
}  // namespace lcd
