// conv2d_nhwc_lora: conv2d_nhwc with one LoRA branch fused in (DESIGN.md §5),
//   y = W ∗ x + b + s · B (A ∗ x),   A (r, Cin, kh, kw) a convolution like W, B (Cout, r, 1, 1) pointwise,
// on channels-last tensors. One row GEMM pass (ops/row_gemm.h): each chunk's patches are built once and
// serve W and A; H = A ∗ x (M, r) is kept for backward; a frozen W and b get no gradient work.
#include "autograd/errors.h"
#include "autograd/op_registry.h"
#include "autograd/ops.h"
#include "autograd/ops/instantiate.h"
#include "autograd/ops/row_gemm.h"

namespace lcd {
LCD_DIFFERENTIABLE_OP(conv2d_nhwc_lora);

template <typename T>
row_gemm::Geometry conv_nhwc_geometry(const char* op, const TensorT<T>& x, const TensorT<T>& weight,
                                      const TensorT<T>& bias, const Conv2dOptions& options);

template <typename T>
TensorT<T> conv2d_nhwc_lora(const TensorT<T>& x, const TensorT<T>& weight, const TensorT<T>& bias,
                            const TensorT<T>& down, const TensorT<T>& up, double scale, Conv2dOptions options) {
  const row_gemm::Geometry g = conv_nhwc_geometry("conv2d_nhwc_lora", x, weight, bias, options);
  if (down.ndim() != 4 || down.size(0) < 1 || down.size(1) != weight.size(1) || down.size(2) != weight.size(2) ||
      down.size(3) != weight.size(3))
    throw ShapeError("conv2d_nhwc_lora: LoRA down " + down.shape().str() + " does not fit weight " + weight.shape().str());
  if (up.ndim() != 4 || up.size(0) != weight.size(0) || up.size(1) != down.size(0) || up.size(2) != 1 || up.size(3) != 1)
    throw ShapeError("conv2d_nhwc_lora: LoRA up " + up.shape().str() + " does not fit down " + down.shape().str() +
                     " and weight " + weight.shape().str());
  const row_gemm::Lora<T> lora{down, up, scale};
  auto y = TensorT<T>::empty({g.conv.batch, g.conv.out_h, g.conv.out_w, g.n});
  const bool recording = should_record<T>({&x, &weight, &bias, &down, &up});
  TensorT<T> h = recording ? TensorT<T>::empty({g.rows, lora.rank()}) : TensorT<T>();  // (M, r) = A ∗ x
  row_gemm::forward(row_gemm::Layer<T>{x, weight, bias, lora, g}, y.data(), recording ? h.data() : nullptr);
  if (recording)
    record<T>(y, "conv2d_nhwc_lora", {&x, &weight, &bias, &down, &up}, [x, weight, bias, lora, g, h](const TensorT<T>& grad) {
      row_gemm::backward(row_gemm::Layer<T>{x, weight, bias, lora, g}, grad.data(), h.data());
    });
  return y;
}

#define INSTANTIATE(T)                                                                                           \
  template TensorT<T> conv2d_nhwc_lora<T>(const TensorT<T>&, const TensorT<T>&, const TensorT<T>&,               \
                                          const TensorT<T>&, const TensorT<T>&, double, Conv2dOptions);
LCD_FOR_EACH_SCALAR(INSTANTIATE)
}  // namespace lcd
