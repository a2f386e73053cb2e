// add: y = a + b with broadcasting. ∂y/∂a = ∂y/∂b = 1 (summed back over broadcast axes by accumulate_grad).
#include "autograd/op_registry.h"
#include "autograd/ops.h"
#include "autograd/ops/elementwise.h"
#include "autograd/ops/instantiate.h"

namespace lcd {
LCD_DIFFERENTIABLE_OP(add);

template <typename T>
static TensorT<T> add_forward(const TensorT<T>& a, const TensorT<T>& b) {
  return map_binary(a, b, [](T x, T y) { return x + y; });
}

template <typename T>
static void add_backward(const TensorT<T>& grad, const TensorT<T>& a, const TensorT<T>& b) {
  accumulate_grad(a, grad);
  accumulate_grad(b, grad);
}

template <typename T>
TensorT<T> add(const TensorT<T>& a, const TensorT<T>& b) {
  TensorT<T> y = add_forward(a, b);
  if (should_record<T>({&a, &b}))
    record<T>(y, "add", {&a, &b}, [a, b](const TensorT<T>& g) { add_backward(g, a, b); });
  return y;
}

#define INSTANTIATE(T) template TensorT<T> add<T>(const TensorT<T>&, const TensorT<T>&);
LCD_FOR_EACH_SCALAR(INSTANTIATE)
}  // namespace lcd
