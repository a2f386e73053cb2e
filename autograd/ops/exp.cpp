// exp: y = eˣ, ∂y/∂x = y.
#include <cmath>

#include "autograd/op_registry.h"
#include "autograd/ops.h"
#include "autograd/ops/elementwise.h"
#include "autograd/ops/instantiate.h"

namespace lcd {
LCD_DIFFERENTIABLE_OP(exp);

template <typename T>
static TensorT<T> exp_forward(const TensorT<T>& x) {
  return map_array(x, [](const auto& v) { return v.exp(); });
}

// g: ∂L/∂y, x: the input, y: the saved output
template <typename T>
static void exp_backward(const TensorT<T>& grad, const TensorT<T>& x, const TensorT<T>& y) {
  accumulate_grad(x, map_ternary(grad, x, y, [](T g, T v, T w) -> T { return g * w; }));
}

template <typename T>
TensorT<T> exp(const TensorT<T>& x) {
  TensorT<T> y = exp_forward(x);
  if (should_record<T>({&x}))
    record<T>(y, "exp", {&x}, [x, y = y.detach()](const TensorT<T>& g) { exp_backward(g, x, y); });
  return y;
}

#define INSTANTIATE(T) template TensorT<T> exp<T>(const TensorT<T>&);
LCD_FOR_EACH_SCALAR(INSTANTIATE)
}  // namespace lcd
