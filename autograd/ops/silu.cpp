// silu: y = x·σ(x), ∂y/∂x = σ(x)·(1 + x·(1 − σ(x))).
#include <cmath>

#include "autograd/op_registry.h"
#include "autograd/ops.h"
#include "autograd/ops/elementwise.h"
#include "autograd/ops/instantiate.h"

namespace lcd {
LCD_DIFFERENTIABLE_OP(silu);

template <typename T>
static TensorT<T> silu_forward(const TensorT<T>& x) {
  return map_array(x, [](const auto& v) { return v / (T(1) + (-v).exp()); });
}

// g: ∂L/∂y, x: the input, y: the saved output
template <typename T>
static void silu_backward(const TensorT<T>& grad, const TensorT<T>& x, const TensorT<T>& y) {
  // σ(x)·(1 + x·(1 − σ(x))), σ = 1/(1 + e^{−x})
  accumulate_grad(x, map_array2(grad, x, [](const auto& g, const auto& v) {
    const auto sigma = T(1) / (T(1) + (-v).exp());
    return g * sigma * (T(1) + v * (T(1) - sigma));
  }));
}

template <typename T>
TensorT<T> silu(const TensorT<T>& x) {
  TensorT<T> y = silu_forward(x);
  if (should_record<T>({&x}))
    record<T>(y, "silu", {&x}, [x, y = y.detach()](const TensorT<T>& g) { silu_backward(g, x, y); });
  return y;
}

#define INSTANTIATE(T) template TensorT<T> silu<T>(const TensorT<T>&);
LCD_FOR_EACH_SCALAR(INSTANTIATE)
}  // namespace lcd
