// abs: y = |x|, ∂y/∂x = sign(x) (0 at 0).
#include <cmath>

#include "autograd/op_registry.h"
#include "autograd/ops.h"
#include "autograd/ops/elementwise.h"
#include "autograd/ops/instantiate.h"

namespace lcd {
LCD_DIFFERENTIABLE_OP(abs);

template <typename T>
static TensorT<T> abs_forward(const TensorT<T>& x) {
  return map_unary(x, [](T v) -> T { return std::abs(v); });
}

// g: ∂L/∂y, x: the input, y: the saved output
template <typename T>
static void abs_backward(const TensorT<T>& grad, const TensorT<T>& x, const TensorT<T>& y) {
  accumulate_grad(x, map_ternary(grad, x, y, [](T g, T v, T w) -> T { return v > T(0) ? g : (v < T(0) ? -g : T(0)); }));
}

template <typename T>
TensorT<T> abs(const TensorT<T>& x) {
  TensorT<T> y = abs_forward(x);
  if (should_record<T>({&x}))
    record<T>(y, "abs", {&x}, [x, y = y.detach()](const TensorT<T>& g) { abs_backward(g, x, y); });
  return y;
}

#define INSTANTIATE(T) template TensorT<T> abs<T>(const TensorT<T>&);
LCD_FOR_EACH_SCALAR(INSTANTIATE)
}  // namespace lcd
