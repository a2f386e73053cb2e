// im2col and its adjoint col2im, the data movement around conv2d's GEMM.
#include "autograd/ops/instantiate.h"
#include "autograd/ops/kernels.h"

namespace lcd {

template <typename T>
void im2col(const T* x, const ConvGeometry& g, T* cols) {
  const int64_t hw_out = g.out_h * g.out_w, ncols = g.columns();
  const int64_t rows = g.patch();
#pragma omp parallel for schedule(static) if (rows * ncols > 32768)
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t c = r / (g.kernel_h * g.kernel_w);
    const int64_t ki = (r / g.kernel_w) % g.kernel_h, kj = r % g.kernel_w;
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
        const T* srow = src + ii * g.width;
        for (int64_t oj = 0; oj < g.out_w; ++oj) {
          const int64_t jj = oj * g.stride - g.padding + kj;
          drow[oj] = (jj >= 0 && jj < g.width) ? srow[jj] : T(0);
        }
      }
    }
  }
}

template <typename T>
void col2im_accumulate(const T* cols, const ConvGeometry& g, T* dx) {
  const int64_t hw_out = g.out_h * g.out_w, ncols = g.columns();
  const int64_t kk = g.kernel_h * g.kernel_w;
  // Parallel over (n, c) planes: each plane of dx is written by one thread, in a fixed order.
#pragma omp parallel for schedule(static) if (g.patch() * ncols > 32768)
  for (int64_t plane = 0; plane < g.batch * g.channels; ++plane) {
    const int64_t n = plane / g.channels, c = plane % g.channels;
    T* dst = dx + plane * g.height * g.width;
    for (int64_t k = 0; k < kk; ++k) {
      const int64_t ki = k / g.kernel_w, kj = k % g.kernel_w;
      const T* src = cols + (c * kk + k) * ncols + n * hw_out;
      for (int64_t oi = 0; oi < g.out_h; ++oi) {
        const int64_t ii = oi * g.stride - g.padding + ki;
        if (ii < 0 || ii >= g.height) continue;
        for (int64_t oj = 0; oj < g.out_w; ++oj) {
          const int64_t jj = oj * g.stride - g.padding + kj;
          if (jj >= 0 && jj < g.width) dst[ii * g.width + jj] += src[oi * g.out_w + oj];
        }
      }
    }
  }
}

#define INSTANTIATE(T)                                          \
  template void im2col<T>(const T*, const ConvGeometry&, T*); \
  template void col2im_accumulate<T>(const T*, const ConvGeometry&, T*);
LCD_FOR_EACH_SCALAR(INSTANTIATE)
}  // namespace lcd
