// conv2d_nhwc: a 2-D convolution on channels-last tensors, x (N, H, W, Cin) → y (N, Ho, Wo, Cout), with the
// weight in its canonical (diffusers) shape (Cout, Cin, kh, kw) and an optional bias (Cout). One row GEMM
// (ops/row_gemm.h): rows are the output pixels, K = kh·kw·Cin patch entries built by im2col per chunk (a 1×1
// stride-1 convolution uses x's rows as they are), in the process precision for float tensors.
// Backward: ∂W = Gᵀ·X (only when W is trainable), ∂b = Σ G, ∂X = G·W through col2im.
#include "autograd/errors.h"
#include "autograd/op_registry.h"
#include "autograd/ops.h"
#include "autograd/ops/instantiate.h"
#include "autograd/ops/row_gemm.h"

namespace lcd {
LCD_DIFFERENTIABLE_OP(conv2d_nhwc);

template <typename T>
row_gemm::Geometry conv_nhwc_geometry(const char* op, const TensorT<T>& x, const TensorT<T>& weight,
                                      const TensorT<T>& bias, const Conv2dOptions& options) {
  row_gemm::Geometry g;
  g.conv = row_gemm::checked_nhwc_conv_geometry(op, x, weight, bias, options);
  const ConvGeometry& c = g.conv;
  g.rows_per_sample = c.out_h * c.out_w;
  g.rows = c.batch * g.rows_per_sample;
  g.k = c.kernel_h * c.kernel_w * c.channels;
  g.n = weight.size(0);
  g.im2col = !(c.kernel_h == 1 && c.kernel_w == 1 && c.stride == 1 && c.padding == 0 && c.out_h == c.height &&
               c.out_w == c.width);
  return g;
}

template <typename T>
TensorT<T> conv2d_nhwc(const TensorT<T>& x, const TensorT<T>& weight, const TensorT<T>& bias, Conv2dOptions options) {
  const row_gemm::Geometry g = conv_nhwc_geometry("conv2d_nhwc", x, weight, bias, options);
  auto y = TensorT<T>::empty({g.conv.batch, g.conv.out_h, g.conv.out_w, g.n});
  static const row_gemm::Lora<T> no_lora;
  row_gemm::forward(row_gemm::Layer<T>{x, weight, bias, no_lora, g}, y.data(), static_cast<T*>(nullptr));
  if (should_record<T>({&x, &weight, &bias}))
    record<T>(y, "conv2d_nhwc", {&x, &weight, &bias}, [x, weight, bias, g](const TensorT<T>& grad) {
      row_gemm::backward(row_gemm::Layer<T>{x, weight, bias, no_lora, g}, grad.data(), static_cast<const T*>(nullptr));
    });
  return y;
}

#define INSTANTIATE(T)                                                                                            \
  template TensorT<T> conv2d_nhwc<T>(const TensorT<T>&, const TensorT<T>&, const TensorT<T>&, Conv2dOptions);   \
  template row_gemm::Geometry conv_nhwc_geometry<T>(const char*, const TensorT<T>&, const TensorT<T>&,           \
                                                    const TensorT<T>&, const Conv2dOptions&);
LCD_FOR_EACH_SCALAR(INSTANTIATE)
}  // namespace lcd
