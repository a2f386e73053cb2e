// log: y = ln x, ∂y/∂x = 1/x.
#include <cmath>

#include "autograd/op_registry.h"
#include "autograd/ops.h"
#include "autograd/ops/elementwise.h"
#include "autograd/ops/instantiate.h"

namespace lcd {
LCD_DIFFERENTIABLE_OP(log);

template <typename T>
static TensorT<T> log_forward(const TensorT<T>& x) {
  return map_unary(x, [](T v) -> T { return std::log(v); });
}

// g: ∂L/∂y, x: the input, y: the saved output
template <typename T>
static void log_backward(const TensorT<T>& grad, const TensorT<T>& x, const TensorT<T>& y) {
  accumulate_grad(x, map_ternary(grad, x, y, [](T g, T v, T w) -> T { return g / v; }));
}

template <typename T>
TensorT<T> log(const TensorT<T>& x) {
  TensorT<T> y = log_forward(x);
  if (should_record<T>({&x}))
    record<T>(y, "log", {&x}, [x, y = y.detach()](const TensorT<T>& g) { log_backward(g, x, y); });
  return y;
}

#define INSTANTIATE(T) template TensorT<T> log<T>(const TensorT<T>&);
LCD_FOR_EACH_SCALAR(INSTANTIATE)
}  // namespace lcd
