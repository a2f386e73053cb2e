// gelu: exact y = ½x(1 + erf(x/√2)), or the tanh form y = ½x(1 + tanh(√(2/π)(x + 0.044715x³))).
#include <cmath>

#include "autograd/op_registry.h"
#include "autograd/ops.h"
#include "autograd/ops/elementwise.h"
#include "autograd/ops/instantiate.h"

namespace lcd {
LCD_DIFFERENTIABLE_OP(gelu);

namespace {
constexpr double kInvSqrt2 = 0.70710678118654752440;
constexpr double kInvSqrt2Pi = 0.39894228040143267794;
constexpr double kSqrt2OverPi = 0.79788456080286535588;
constexpr double kTanhCoeff = 0.044715;
}  // namespace

template <typename T>
static TensorT<T> gelu_forward(const TensorT<T>& x, GeluApproximation approximation) {
  if (approximation == GeluApproximation::kTanh)
    return map_unary(x, [](T v) {
      return T(0.5) * v * (T(1) + std::tanh(T(kSqrt2OverPi) * (v + T(kTanhCoeff) * v * v * v)));
    });
  return map_array(x, [](const auto& v) { return T(0.5) * v * (T(1) + (v * T(kInvSqrt2)).erf()); });
}

template <typename T>
static void gelu_backward(const TensorT<T>& grad, const TensorT<T>& x, GeluApproximation approximation) {
  if (approximation == GeluApproximation::kTanh) {
    accumulate_grad(x, map_binary(grad, x, [](T g, T v) {
      const T t = std::tanh(T(kSqrt2OverPi) * (v + T(kTanhCoeff) * v * v * v));
      const T dinner = T(kSqrt2OverPi) * (T(1) + T(3 * kTanhCoeff) * v * v);
      return g * (T(0.5) * (T(1) + t) + T(0.5) * v * (T(1) - t * t) * dinner);
    }));
  } else {
    accumulate_grad(x, map_array2(grad, x, [](const auto& g, const auto& v) {
      return g * (T(0.5) * (T(1) + (v * T(kInvSqrt2)).erf()) + v * T(kInvSqrt2Pi) * (T(-0.5) * v * v).exp());
    }));
  }
}

template <typename T>
TensorT<T> gelu(const TensorT<T>& x, GeluApproximation approximation) {
  TensorT<T> y = gelu_forward(x, approximation);
  if (should_record<T>({&x}))
    record<T>(y, "gelu", {&x}, [x, approximation](const TensorT<T>& g) { gelu_backward(g, x, approximation); });
  return y;
}

#define INSTANTIATE(T) template TensorT<T> gelu<T>(const TensorT<T>&, GeluApproximation);
LCD_FOR_EACH_SCALAR(INSTANTIATE)
}  // namespace lcd
