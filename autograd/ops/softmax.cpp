// softmax over the last axis: y_i = e^{x_i − max} / Σ_j e^{x_j − max}. ∂L/∂x = y ⊙ (g − Σ g⊙y).
#include <cmath>

#include "autograd/op_registry.h"
#include "autograd/ops.h"
#include "autograd/ops/instantiate.h"
#include "autograd/ops/elementwise.h"
#include "autograd/ops/kernels.h"
#include "autograd/parallel.h"

namespace lcd {
LCD_DIFFERENTIABLE_OP(softmax);

// Row-wise softmax of `rows` rows of length n, in place safe (src may equal dst).
template <typename T>
void softmax_rows(const T* src, T* dst, int64_t rows, int64_t n) {
  parallel_for(rows, rows * n > 32768, [&](int64_t r) {
    const T* s = src + r * n;
    T* d = dst + r * n;
    T m = s[0];
    for (int64_t i = 1; i < n; ++i) m = std::max(m, s[i]);
    ArrayMap<T> out(d, n);
    out = (ConstArrayMap<T>(s, n) - m).exp();  // Eigen's SIMD exp, elementwise (src may alias dst)
    // A sequential sum: Eigen's vectorised reduction peels unaligned leading elements, so its summation order
    // (and the rounding) would depend on where the row happens to sit in memory.
    T z = 0;
    for (int64_t i = 0; i < n; ++i) z += d[i];
    out *= T(1) / z;
  });
}

template <typename T>
static TensorT<T> softmax_forward(const TensorT<T>& x) {
  auto y = TensorT<T>::empty(x.shape());
  const int64_t n = x.size(-1);
  softmax_rows(x.data(), y.data(), x.numel() / n, n);
  return y;
}

template <typename T>
static void softmax_backward(const TensorT<T>& grad, const TensorT<T>& x, const TensorT<T>& y) {
  const int64_t n = x.size(-1), rows = x.numel() / n;
  T* gx = grad_buffer(x);
  const T* g = grad.data();
  const T* yp = y.data();
  parallel_for(rows, rows * n > 32768, [&](int64_t r) {
    T dot = 0;
    for (int64_t i = 0; i < n; ++i) dot += g[r * n + i] * yp[r * n + i];
    for (int64_t i = 0; i < n; ++i) gx[r * n + i] += yp[r * n + i] * (g[r * n + i] - dot);
  });
}

template <typename T>
TensorT<T> softmax(const TensorT<T>& x) {
  TensorT<T> y = softmax_forward(x);
  if (should_record<T>({&x}))
    record<T>(y, "softmax", {&x}, [x, y = y.detach()](const TensorT<T>& g) { softmax_backward(g, x, y); });
  return y;
}

#define INSTANTIATE(T)                                   \
  template TensorT<T> softmax<T>(const TensorT<T>&); \
  template void softmax_rows<T>(const T*, T*, int64_t, int64_t);
LCD_FOR_EACH_SCALAR(INSTANTIATE)
}  // namespace lcd
