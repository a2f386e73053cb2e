// pow: y = x^p for a constant exponent p, ∂y/∂x = p·x^(p−1).
#include <cmath>

#include "autograd/op_registry.h"
#include "autograd/ops.h"
#include "autograd/ops/elementwise.h"
#include "autograd/ops/instantiate.h"

namespace lcd {
LCD_DIFFERENTIABLE_OP(pow);

template <typename T>
static TensorT<T> pow_forward(const TensorT<T>& x, T p) {
  return map_unary(x, [=](T v) { return std::pow(v, p); });
}

template <typename T>
static void pow_backward(const TensorT<T>& grad, const TensorT<T>& x, T p) {
  accumulate_grad(x, map_binary(grad, x, [=](T g, T v) { return g * p * std::pow(v, p - T(1)); }));
}

template <typename T>
TensorT<T> pow(const TensorT<T>& x, double exponent) {
  const T p = static_cast<T>(exponent);
  TensorT<T> y = pow_forward(x, p);
  if (should_record<T>({&x})) record<T>(y, "pow", {&x}, [x, p](const TensorT<T>& g) { pow_backward(g, x, p); });
  return y;
}

#define INSTANTIATE(T) template TensorT<T> pow<T>(const TensorT<T>&, double);
LCD_FOR_EACH_SCALAR(INSTANTIATE)
}  // namespace lcd
