// im2col and its adjoint col2im, the data movement around conv2d's GEMM.
#include <algorithm>

#include "autograd/ops/instantiate.h"
#include "autograd/ops/kernels.h"
#include "autograd/parallel.h"

namespace lcd {

// Output columns oj whose input column oj·stride − padding + kj lies inside [0, width): [lo, hi).
static inline void valid_range(const ConvGeometry& g, int64_t kj, int64_t* lo, int64_t* hi) {
  // oj·s ≥ padding − kj  and  oj·s ≤ width − 1 + padding − kj
  const int64_t a = g.padding - kj, b = g.width - 1 + g.padding - kj;
  *lo = a <= 0 ? 0 : (a + g.stride - 1) / g.stride;
  *hi = b < 0 ? 0 : std::min<int64_t>(g.out_w, b / g.stride + 1);
  if (*lo > *hi) *lo = *hi;
}

template <typename T>
void im2col(const T* x, const ConvGeometry& g, T* cols) {
  const int64_t hw_out = g.out_h * g.out_w, ncols = g.columns();
  const int64_t rows = g.patch();
  parallel_for(rows, rows * ncols > 32768, [&](int64_t r) {
    const int64_t c = r / (g.kernel_h * g.kernel_w);
    const int64_t ki = (r / g.kernel_w) % g.kernel_h, kj = r % g.kernel_w;
    int64_t lo, hi;
    valid_range(g, kj, &lo, &hi);
    T* dst = cols + r * ncols;
    for (int64_t n = 0; n < g.batch; ++n) {
      const T* src = x + (n * g.channels + c) * g.height * g.width;
      T* d = dst + n * hw_out;
      for (int64_t oi = 0; oi < g.out_h; ++oi) {
        const int64_t ii = oi * g.stride - g.padding + ki;
        T* drow = d + oi * g.out_w;
        if (ii < 0 || ii >= g.height) {
          for (int64_t oj = 0; oj < g.out_w; ++oj) drow[oj] = T(0);
          continue;
        }
        const T* srow = src + ii * g.width - g.padding + kj;  // srow[oj·stride] is the input for column oj
        // Plain loops: rows are short (8 at the UNet's scale), where library calls cost more than the copy.
        for (int64_t oj = 0; oj < lo; ++oj) drow[oj] = T(0);
        if (g.stride == 1)
          for (int64_t oj = lo; oj < hi; ++oj) drow[oj] = srow[oj];
        else
          for (int64_t oj = lo; oj < hi; ++oj) drow[oj] = srow[oj * g.stride];
        for (int64_t oj = hi; oj < g.out_w; ++oj) drow[oj] = T(0);
      }
    }
  });
}

template <typename T>
void col2im_accumulate(const T* cols, const ConvGeometry& g, T* dx) {
  const int64_t hw_out = g.out_h * g.out_w, ncols = g.columns();
  const int64_t kk = g.kernel_h * g.kernel_w;
  // Parallel over (n, c) planes: each plane of dx is written by one thread, in a fixed order.
  parallel_for(g.batch * g.channels, g.patch() * ncols > 32768, [&](int64_t plane) {
    const int64_t n = plane / g.channels, c = plane % g.channels;
    T* dst = dx + plane * g.height * g.width;
    for (int64_t k = 0; k < kk; ++k) {
      const int64_t ki = k / g.kernel_w, kj = k % g.kernel_w;
      int64_t lo, hi;
      valid_range(g, kj, &lo, &hi);
      const T* src = cols + (c * kk + k) * ncols + n * hw_out;
      for (int64_t oi = 0; oi < g.out_h; ++oi) {
        const int64_t ii = oi * g.stride - g.padding + ki;
        if (ii < 0 || ii >= g.height) continue;
        T* drow = dst + ii * g.width - g.padding + kj;
        const T* srow = src + oi * g.out_w;
        for (int64_t oj = lo; oj < hi; ++oj) drow[oj * g.stride] += srow[oj];
      }
    }
  });
}

#define INSTANTIATE(T)                                          \
  template void im2col<T>(const T*, const ConvGeometry&, T*); \
  template void col2im_accumulate<T>(const T*, const ConvGeometry&, T*);
LCD_FOR_EACH_SCALAR(INSTANTIATE)
}  // namespace lcd
