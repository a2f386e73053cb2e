// pseudo_huber_loss (DESIGN.md §4 step 6): L = mean(√((p − t)² + c²) − c).
// ∂L/∂p = (p − t)/√((p − t)² + c²)/n·g, ∂L/∂t = −∂L/∂p.
#include <cmath>

#include "autograd/errors.h"
#include "autograd/op_registry.h"
#include "autograd/ops.h"
#include "autograd/ops/elementwise.h"
#include "autograd/ops/instantiate.h"

namespace lcd {
LCD_DIFFERENTIABLE_OP(pseudo_huber_loss);

template <typename T>
static TensorT<T> pseudo_huber_loss_forward(const TensorT<T>& p, const TensorT<T>& t, double c) {
  double acc = 0;
  for (int64_t i = 0; i < p.numel(); ++i) {
    const double d = static_cast<double>(p.data()[i]) - t.data()[i];
    acc += std::sqrt(d * d + c * c) - c;
  }
  return TensorT<T>::full(Shape{}, static_cast<T>(acc / p.numel()));
}

template <typename T>
static void pseudo_huber_loss_backward(const TensorT<T>& grad, const TensorT<T>& p, const TensorT<T>& t, double c) {
  const T k = grad.item() / T(p.numel());
  const T c2 = static_cast<T>(c * c);
  auto dp = map_binary(p, t, [=](T a, T b) { return k * (a - b) / std::sqrt((a - b) * (a - b) + c2); });
  accumulate_grad(p, dp);
  if (needs_grad(t)) accumulate_grad(t, map_unary(dp, [](T v) { return -v; }));
}

template <typename T>
TensorT<T> pseudo_huber_loss(const TensorT<T>& prediction, const TensorT<T>& target, double c) {
  check_shape(target, prediction.shape(), "pseudo_huber_loss target");
  if (!(c > 0)) throw ValueError("pseudo_huber_loss: c must be positive, got " + std::to_string(c));
  TensorT<T> y = pseudo_huber_loss_forward(prediction, target, c);
  if (should_record<T>({&prediction, &target}))
    record<T>(y, "pseudo_huber_loss", {&prediction, &target},
              [prediction, target, c](const TensorT<T>& g) { pseudo_huber_loss_backward(g, prediction, target, c); });
  return y;
}

#define INSTANTIATE(T) template TensorT<T> pseudo_huber_loss<T>(const TensorT<T>&, const TensorT<T>&, double);
LCD_FOR_EACH_SCALAR(INSTANTIATE)
}  // namespace lcd
