// upsample_nearest2x: (N,C,H,W) → (N,C,2H,2W), y[2i+a, 2j+b] = x[i, j]. ∂L/∂x[i,j] = Σ of its 2×2 block of g.
#include "autograd/errors.h"
#include "autograd/op_registry.h"
#include "autograd/ops.h"
#include "autograd/ops/instantiate.h"
#include "autograd/parallel.h"

namespace lcd {
LCD_DIFFERENTIABLE_OP(upsample_nearest2x);

template <typename T>
static TensorT<T> upsample_nearest2x_forward(const TensorT<T>& x) {
  const int64_t planes = x.size(0) * x.size(1), h = x.size(2), w = x.size(3);
  auto y = TensorT<T>::empty({x.size(0), x.size(1), 2 * h, 2 * w});
  const T* xp = x.data();
  T* yp = y.data();
  parallel_for(planes, y.numel() > 32768, [&](int64_t p) {
    for (int64_t i = 0; i < 2 * h; ++i)
      for (int64_t j = 0; j < 2 * w; ++j) yp[(p * 2 * h + i) * 2 * w + j] = xp[(p * h + i / 2) * w + j / 2];
  });
  return y;
}

template <typename T>
static void upsample_nearest2x_backward(const TensorT<T>& grad, const TensorT<T>& x) {
  const int64_t planes = x.size(0) * x.size(1), h = x.size(2), w = x.size(3);
  const T* gp = grad.data();
  T* gx = grad_buffer(x);
  parallel_for(planes, grad.numel() > 32768, [&](int64_t p) {
    for (int64_t i = 0; i < h; ++i)
      for (int64_t j = 0; j < w; ++j) {
        const T* g = gp + (p * 2 * h + 2 * i) * 2 * w + 2 * j;
        gx[(p * h + i) * w + j] += g[0] + g[1] + g[2 * w] + g[2 * w + 1];
      }
  });
}

template <typename T>
TensorT<T> upsample_nearest2x(const TensorT<T>& x) {
  if (x.ndim() != 4) throw ShapeError("upsample_nearest2x: expected (N,C,H,W), got " + x.shape().str());
  TensorT<T> y = upsample_nearest2x_forward(x);
  if (should_record<T>({&x}))
    record<T>(y, "upsample_nearest2x", {&x}, [x](const TensorT<T>& g) { upsample_nearest2x_backward(g, x); });
  return y;
}

#define INSTANTIATE(T) template TensorT<T> upsample_nearest2x<T>(const TensorT<T>&);
LCD_FOR_EACH_SCALAR(INSTANTIATE)
}  // namespace lcd
