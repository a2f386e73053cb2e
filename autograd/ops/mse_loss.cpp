// mse_loss: L = mean((p − t)²) over all n elements. ∂L/∂p = 2(p − t)/n·g, ∂L/∂t = −∂L/∂p.
#include "autograd/errors.h"
#include "autograd/op_registry.h"
#include "autograd/ops.h"
#include "autograd/ops/elementwise.h"
#include "autograd/ops/instantiate.h"

namespace lcd {
LCD_DIFFERENTIABLE_OP(mse_loss);

template <typename T>
static TensorT<T> mse_loss_forward(const TensorT<T>& p, const TensorT<T>& t) {
  double acc = 0;
  for (int64_t i = 0; i < p.numel(); ++i) {
    const double d = static_cast<double>(p.data()[i]) - t.data()[i];
    acc += d * d;
  }
  return TensorT<T>::full(Shape{}, static_cast<T>(acc / p.numel()));
}

template <typename T>
static void mse_loss_backward(const TensorT<T>& grad, const TensorT<T>& p, const TensorT<T>& t) {
  const T k = T(2) * grad.item() / T(p.numel());
  auto dp = map_binary(p, t, [=](T a, T b) { return k * (a - b); });
  accumulate_grad(p, dp);
  if (needs_grad(t)) accumulate_grad(t, map_unary(dp, [](T v) { return -v; }));
}

template <typename T>
TensorT<T> mse_loss(const TensorT<T>& prediction, const TensorT<T>& target) {
  check_shape(target, prediction.shape(), "mse_loss target");
  TensorT<T> y = mse_loss_forward(prediction, target);
  if (should_record<T>({&prediction, &target}))
    record<T>(y, "mse_loss", {&prediction, &target},
              [prediction, target](const TensorT<T>& g) { mse_loss_backward(g, prediction, target); });
  return y;
}

#define INSTANTIATE(T) template TensorT<T> mse_loss<T>(const TensorT<T>&, const TensorT<T>&);
LCD_FOR_EACH_SCALAR(INSTANTIATE)
}  // namespace lcd
