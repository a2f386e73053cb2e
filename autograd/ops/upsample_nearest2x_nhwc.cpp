// upsample_nearest2x_nhwc: (N, H, W, C) → (N, 2H, 2W, C), y[2i+a, 2j+b, :] = x[i, j, :] (whole channel runs
// copied). ∂L/∂x[i, j, :] = Σ of its 2×2 block of g.
#include <cstring>

#include "autograd/errors.h"
#include "autograd/op_registry.h"
#include "autograd/ops.h"
#include "autograd/ops/instantiate.h"
#include "autograd/parallel.h"

namespace lcd {
LCD_DIFFERENTIABLE_OP(upsample_nearest2x_nhwc);

template <typename T>
static TensorT<T> upsample_forward(const TensorT<T>& x) {
  const int64_t n = x.size(0), h = x.size(1), w = x.size(2), c = x.size(3);
  auto y = TensorT<T>::empty({n, 2 * h, 2 * w, c});
  const T* xp = x.data();
  T* yp = y.data();
  parallel_for(n * 2 * h, y.numel() > 32768, [&](int64_t r) {  // output rows
    const int64_t s = r / (2 * h), i = (r % (2 * h)) / 2;
    for (int64_t j = 0; j < 2 * w; ++j) std::memcpy(yp + (r * 2 * w + j) * c, xp + ((s * h + i) * w + j / 2) * c, sizeof(T) * c);
  });
  return y;
}

template <typename T>
static void upsample_backward(const TensorT<T>& grad, const TensorT<T>& x) {
  const int64_t n = x.size(0), h = x.size(1), w = x.size(2), c = x.size(3);
  const T* gp = grad.data();
  T* gx = grad_buffer(x);
  parallel_for(n * h, grad.numel() > 32768, [&](int64_t r) {  // input rows
    const int64_t s = r / h, i = r % h;
    for (int64_t j = 0; j < w; ++j) {
      T* d = gx + (r * w + j) * c;
      const T* g00 = gp + ((s * 2 * h + 2 * i) * 2 * w + 2 * j) * c;
      const T* g10 = g00 + 2 * w * c;
      for (int64_t q = 0; q < c; ++q) d[q] += g00[q] + g00[c + q] + g10[q] + g10[c + q];
    }
  });
}

template <typename T>
TensorT<T> upsample_nearest2x_nhwc(const TensorT<T>& x) {
  if (x.ndim() != 4) throw ShapeError("upsample_nearest2x_nhwc: expected (N,H,W,C), got " + x.shape().str());
  TensorT<T> y = upsample_forward(x);
  if (should_record<T>({&x}))
    record<T>(y, "upsample_nearest2x_nhwc", {&x}, [x](const TensorT<T>& g) { upsample_backward(g, x); });
  return y;
}

#define INSTANTIATE(T) template TensorT<T> upsample_nearest2x_nhwc<T>(const TensorT<T>&);
LCD_FOR_EACH_SCALAR(INSTANTIATE)
}  // namespace lcd
