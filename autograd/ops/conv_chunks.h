// The chunked im2col + GEMM machinery shared by conv2d and conv2d_lora: geometry, the split of the batch into
// cache-sized chunks, and the (C, m·S) ↔ (m, C, S) layout changes around each chunk's GEMM.
#pragma once
#include <omp.h>

#include <Eigen/Core>
#include <algorithm>
#include <cstring>

#include "autograd/errors.h"
#include "autograd/ops.h"
#include "autograd/ops/kernels.h"

namespace lcd::conv_chunks {

// ~256 KB of columns per chunk: inside a 1 MB L2 with room for the weights and the output. Measured on the
// UNet forward at batch 64 (2 threads): 64K floats 155 ms, 256K 250 ms, whole batch 470 ms.
constexpr int64_t kChunkColumnFloats = 64 * 1024;

template <typename T>
using RowMatrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

inline ConvGeometry conv_geometry(const Shape& x, const Shape& w, const Conv2dOptions& o) {
  ConvGeometry g{x[0], x[1], x[2], x[3], w[2], w[3], o.stride, o.padding, 0, 0};
  g.out_h = (g.height + 2 * g.padding + o.extra_pad_end - g.kernel_h) / g.stride + 1;
  g.out_w = (g.width + 2 * g.padding + o.extra_pad_end - g.kernel_w) / g.stride + 1;
  return g;
}

// The geometry of x (N,Cin,H,W) under weight (Cout,Cin,kh,kw) and an optional bias (Cout), after checking that
// they fit; `op` names the caller in the error.
template <typename T>
ConvGeometry checked_conv_geometry(const char* op, const TensorT<T>& x, const TensorT<T>& weight,
                                   const TensorT<T>& bias, const Conv2dOptions& options) {
  const std::string name = op;
  if (x.ndim() != 4 || weight.ndim() != 4 || x.size(1) != weight.size(1))
    throw ShapeError(name + ": input " + x.shape().str() + " does not fit weight " + weight.shape().str());
  if (bias.defined() && (bias.ndim() != 1 || bias.size(0) != weight.size(0)))
    throw ShapeError(name + ": bias " + bias.shape().str() + " does not fit weight " + weight.shape().str());
  if (options.stride < 1 || options.padding < 0 || options.extra_pad_end < 0)
    throw ValueError(name + ": stride must be ≥ 1 and padding ≥ 0");
  const ConvGeometry g = conv_geometry(x.shape(), weight.shape(), options);
  if (g.out_h < 1 || g.out_w < 1)
    throw ShapeError(name + ": kernel " + weight.shape().str() + " larger than padded input " + x.shape().str());
  return g;
}

inline bool is_pointwise(const ConvGeometry& g) {
  return g.kernel_h == 1 && g.kernel_w == 1 && g.stride == 1 && g.padding == 0 && g.out_h == g.height &&
         g.out_w == g.width;
}

// The split of the batch into chunks of `size` samples; the chunks are shared among the threads when there
// are at least as many chunks as threads, else processed in turn with Eigen's threaded GEMM.
struct Chunking {
  int64_t size, count;
};

inline Chunking chunking(const ConvGeometry& g) {
  const int64_t per_sample = g.patch() * g.out_h * g.out_w;
  const int64_t size = std::clamp<int64_t>(kChunkColumnFloats / std::max<int64_t>(per_sample, 1), 1, g.batch);
  const int64_t count = (g.batch + size - 1) / size;
  return {size, count};
}

inline ConvGeometry chunk_geometry(ConvGeometry g, int64_t samples) {
  g.batch = samples;
  return g;
}

// x (m, C, H, W) → cols (patch, m·Ho·Wo)
template <typename T>
void columns_of(const T* x, const ConvGeometry& g, T* cols) {
  const int64_t s = g.height * g.width;
  if (is_pointwise(g)) {
    for (int64_t c = 0; c < g.channels; ++c)
      for (int64_t n = 0; n < g.batch; ++n) std::memcpy(cols + (c * g.batch + n) * s, x + (n * g.channels + c) * s, sizeof(T) * s);
  } else {
    im2col(x, g, cols);
  }
}

// (C, m·S) channel-major ↔ (m, C, S) batch-major; `add` accumulates into dst.
template <typename T>
void cn_to_nchw(const T* src, int64_t m, int64_t c, int64_t s, T* dst, bool add) {
  for (int64_t n = 0; n < m; ++n)
    for (int64_t ci = 0; ci < c; ++ci) {
      const T* a = src + (ci * m + n) * s;
      T* b = dst + (n * c + ci) * s;
      if (add)
        for (int64_t k = 0; k < s; ++k) b[k] += a[k];
      else
        std::memcpy(b, a, sizeof(T) * s);
    }
}
template <typename T>
void nchw_to_cn(const T* src, int64_t m, int64_t c, int64_t s, T* dst) {
  for (int64_t ci = 0; ci < c; ++ci)
    for (int64_t n = 0; n < m; ++n) std::memcpy(dst + (ci * m + n) * s, src + (n * c + ci) * s, sizeof(T) * s);
}

}  // namespace lcd::conv_chunks
