// linear_lora: a linear layer with one LoRA branch fused in (DESIGN.md §5),
//   y = x Wᵀ + b + s · (x Aᵀ) Bᵀ,   A (r, in), B (out, r),
// as one row GEMM pass (ops/row_gemm.h): each chunk's rows are read once for W and A, H = x Aᵀ is kept for
// backward, and a frozen W gets no gradient work.
#include "autograd/errors.h"
#include "autograd/op_registry.h"
#include "autograd/ops.h"
#include "autograd/ops/instantiate.h"
#include "autograd/ops/row_gemm.h"

namespace lcd {
LCD_DIFFERENTIABLE_OP(linear_lora);

template <typename T>
row_gemm::Geometry linear_geometry(const char* op, const TensorT<T>& x, const TensorT<T>& weight, const TensorT<T>& bias);

template <typename T>
TensorT<T> linear_lora(const TensorT<T>& x, const TensorT<T>& weight, const TensorT<T>& bias, const TensorT<T>& down,
                       const TensorT<T>& up, double scale) {
  const row_gemm::Geometry g = linear_geometry("linear_lora", x, weight, bias);
  if (down.ndim() != 2 || down.size(1) != g.k || down.size(0) < 1 || up.ndim() != 2 || up.size(0) != g.n ||
      up.size(1) != down.size(0))
    throw ShapeError("linear_lora: LoRA down " + down.shape().str() + " and up " + up.shape().str() +
                     " do not fit weight " + weight.shape().str());
  const row_gemm::Lora<T> lora{down, up, scale};
  std::vector<int64_t> dims = x.shape().to_vector();
  dims.back() = g.n;
  auto y = TensorT<T>::empty(Shape(dims));
  const bool recording = should_record<T>({&x, &weight, &bias, &down, &up});
  TensorT<T> h = recording ? TensorT<T>::empty({g.rows, lora.rank()}) : TensorT<T>();  // (M, r) = x Aᵀ
  row_gemm::forward(row_gemm::Layer<T>{x, weight, bias, lora, g}, y.data(), recording ? h.data() : nullptr);
  if (recording)
    record<T>(y, "linear_lora", {&x, &weight, &bias, &down, &up}, [x, weight, bias, lora, g, h](const TensorT<T>& grad) {
      row_gemm::backward(row_gemm::Layer<T>{x, weight, bias, lora, g}, grad.data(), h.data());
    });
  return y;
}

#define INSTANTIATE(T)                                                                                         \
  template TensorT<T> linear_lora<T>(const TensorT<T>&, const TensorT<T>&, const TensorT<T>&, const TensorT<T>&, \
                                     const TensorT<T>&, double);
LCD_FOR_EACH_SCALAR(INSTANTIATE)
}  // namespace lcd
