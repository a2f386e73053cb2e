// Raw kernels shared by several ops (no tape): row softmax, im2col/col2im.
#pragma once
#include <cstdint>

namespace lcd {

// Row-wise softmax of `rows` rows of length n; src may equal dst.
template <typename T>
void softmax_rows(const T* src, T* dst, int64_t rows, int64_t n);

// Convolution geometry of one NCHW input.
struct ConvGeometry {
  int64_t batch, channels, height, width;  // input
  int64_t kernel_h, kernel_w, stride, padding;
  int64_t out_h, out_w;
  int64_t patch() const { return channels * kernel_h * kernel_w; }  // rows of the column matrix
  int64_t columns() const { return batch * out_h * out_w; }          // columns of the column matrix
};

// x (N,C,H,W) → cols (C·kh·kw, N·Ho·Wo), zero outside the padded image.
template <typename T>
void im2col(const T* x, const ConvGeometry& g, T* cols);
// The adjoint of im2col: adds cols back into dx (N,C,H,W).
template <typename T>
void col2im_accumulate(const T* cols, const ConvGeometry& g, T* dx);

}  // namespace lcd
