// linear: y (..., out) = x (..., in) · Wᵀ + b, W (out, in), b (out) optional: one row GEMM (ops/row_gemm.h),
// in the process precision for float tensors.
// ∂L/∂x = G W, ∂L/∂W = Gᵀ X, ∂L/∂b = Σ_rows G; a frozen W gets no GEMM in backward.
#include "autograd/errors.h"
#include "autograd/op_registry.h"
#include "autograd/ops.h"
#include "autograd/ops/instantiate.h"
#include "autograd/ops/row_gemm.h"

namespace lcd {
LCD_DIFFERENTIABLE_OP(linear);

template <typename T>
row_gemm::Geometry linear_geometry(const char* op, const TensorT<T>& x, const TensorT<T>& weight, const TensorT<T>& bias) {
  if (weight.ndim() != 2 || x.ndim() < 1 || x.size(-1) != weight.size(1))
    throw ShapeError(std::string(op) + ": input " + x.shape().str() + " does not fit weight " + weight.shape().str());
  if (bias.defined() && (bias.ndim() != 1 || bias.size(0) != weight.size(0)))
    throw ShapeError(std::string(op) + ": bias " + bias.shape().str() + " does not fit weight " + weight.shape().str());
  row_gemm::Geometry g;
  g.k = weight.size(1);
  g.n = weight.size(0);
  g.rows = x.numel() / g.k;
  return g;
}

template <typename T>
TensorT<T> linear(const TensorT<T>& x, const TensorT<T>& weight, const TensorT<T>& bias) {
  const row_gemm::Geometry g = linear_geometry("linear", x, weight, bias);
  std::vector<int64_t> dims = x.shape().to_vector();
  dims.back() = g.n;
  auto y = TensorT<T>::empty(Shape(dims));
  static const row_gemm::Lora<T> no_lora;
  row_gemm::forward(row_gemm::Layer<T>{x, weight, bias, no_lora, g}, y.data(), static_cast<T*>(nullptr));
  if (should_record<T>({&x, &weight, &bias}))
    record<T>(y, "linear", {&x, &weight, &bias}, [x, weight, bias, g](const TensorT<T>& grad) {
      row_gemm::backward(row_gemm::Layer<T>{x, weight, bias, no_lora, g}, grad.data(), static_cast<const T*>(nullptr));
    });
  return y;
}

#define INSTANTIATE(T)                                                                    \
  template TensorT<T> linear<T>(const TensorT<T>&, const TensorT<T>&, const TensorT<T>&); \
  template row_gemm::Geometry linear_geometry<T>(const char*, const TensorT<T>&, const TensorT<T>&, const TensorT<T>&);
LCD_FOR_EACH_SCALAR(INSTANTIATE)
}  // namespace lcd
