// conv2d (NCHW, any kernel, stride, padding) as im2col + GEMM, in chunks of samples:
//   for a chunk of m samples, cols (Cin·kh·kw, m·Ho·Wo) = im2col(x_chunk) and
//   Y_chunk (Cout, m·Ho·Wo) = W (Cout, Cin·kh·kw) · cols + b.
// Chunks are sized so their columns stay in L2 and are spread over the threads, each thread running its own
// single-threaded GEMMs (no column matrix for the whole batch goes through memory). Small batches fall back
// to one chunk with Eigen's own threaded GEMM.
// Backward per chunk: ∂W += G·colsᵀ, ∂cols = Wᵀ·G → col2im into ∂x, ∂b += Σ G. Per-thread ∂W and ∂b partials
// are added in thread order, so results are reproducible for a given thread count. The columns are
// recomputed in backward rather than saved.
#include <omp.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "autograd/errors.h"
#include "autograd/flop_counter.h"
#include "autograd/gemm.h"
#include "autograd/op_registry.h"
#include "autograd/ops.h"
#include "autograd/ops/conv_chunks.h"
#include "autograd/ops/instantiate.h"

namespace lcd {
LCD_DIFFERENTIABLE_OP(conv2d);

using namespace conv_chunks;

template <typename T>
static TensorT<T> conv2d_forward(const TensorT<T>& x, const TensorT<T>& w, const TensorT<T>& b, const ConvGeometry& g) {
  const int64_t cout = w.size(0), s = g.out_h * g.out_w, in_sample = g.channels * g.height * g.width;
  FlopCounter::add(2 * cout * g.patch() * g.columns());
  auto y = TensorT<T>::empty({g.batch, cout, g.out_h, g.out_w});
  const Chunking ch = chunking(g);
  const T* xp = x.data();
  const T* bp = b.defined() ? b.data() : nullptr;
  T* yp = y.data();
  ConstMatrixMap<T> wm(w.data(), cout, g.patch());
  const bool share_chunks = ch.count >= omp_get_max_threads();
#pragma omp parallel if (share_chunks)
  {
    RowMatrix<T> cols, out;  // per-thread buffers, reused across chunks
#pragma omp for schedule(static)
    for (int64_t c = 0; c < ch.count; ++c) {
      const int64_t n0 = c * ch.size, m = std::min(ch.size, g.batch - n0);
      const ConvGeometry cg = chunk_geometry(g, m);
      cols.resize(g.patch(), m * s);
      out.resize(cout, m * s);
      columns_of(xp + n0 * in_sample, cg, cols.data());
      // Start from the bias and accumulate the GEMM onto it (Eigen's `=` would zero the result first).
      for (int64_t o = 0; o < cout; ++o) out.row(o).setConstant(bp ? bp[o] : T(0));
      gemm(out, wm, cols, true);
      cn_to_nchw(out.data(), m, cout, s, yp + n0 * cout * s, false);
    }
  }
  return y;
}

template <typename T>
static void conv2d_backward(const TensorT<T>& grad, const TensorT<T>& x, const TensorT<T>& w, const TensorT<T>& b,
                            const ConvGeometry& g) {
  const int64_t cout = w.size(0), s = g.out_h * g.out_w, in_sample = g.channels * g.height * g.width;
  const bool want_w = needs_grad(w), want_b = needs_grad(b), want_x = needs_grad(x);
  const Chunking ch = chunking(g);
  const int threads = ch.count >= omp_get_max_threads() ? omp_get_max_threads() : 1;
  // Per-thread partial sums of ∂W and ∂b.
  std::vector<RowMatrix<T>> dw(want_w ? threads : 0, RowMatrix<T>::Zero(cout, g.patch()));
  std::vector<Eigen::Matrix<T, Eigen::Dynamic, 1>> db(want_b ? threads : 0, Eigen::Matrix<T, Eigen::Dynamic, 1>::Zero(cout));
  const T* gp = grad.data();
  const T* xp = x.data();
  T* dx = want_x ? grad_buffer(x) : nullptr;
  ConstMatrixMap<T> wm(w.data(), cout, g.patch());
#pragma omp parallel num_threads(threads) if (threads > 1)
  {
    const int t = omp_get_thread_num();
    RowMatrix<T> gcn, cols, dcols;
#pragma omp for schedule(static)
    for (int64_t c = 0; c < ch.count; ++c) {
      const int64_t n0 = c * ch.size, m = std::min(ch.size, g.batch - n0);
      const ConvGeometry cg = chunk_geometry(g, m);
      gcn.resize(cout, m * s);
      nchw_to_cn(gp + n0 * cout * s, m, cout, s, gcn.data());
      if (want_b) db[t] += gcn.rowwise().sum();
      if (want_w) {
        cols.resize(g.patch(), m * s);
        columns_of(xp + n0 * in_sample, cg, cols.data());
        gemm(dw[t], gcn, cols.transpose(), true);
      }
      if (want_x) {
        dcols.resize(g.patch(), m * s);
        gemm(dcols, wm.transpose(), gcn, false);
        if (is_pointwise(g))
          cn_to_nchw(dcols.data(), m, g.channels, s, dx + n0 * in_sample, true);
        else
          col2im_accumulate(dcols.data(), cg, dx + n0 * in_sample);
      }
    }
  }
  for (int t = 0; t < static_cast<int>(dw.size()); ++t) MatrixMap<T>(grad_buffer(w), cout, g.patch()) += dw[t];
  for (int t = 0; t < static_cast<int>(db.size()); ++t)
    Eigen::Map<Eigen::Matrix<T, Eigen::Dynamic, 1>>(grad_buffer(b), cout) += db[t];
}

template <typename T>
TensorT<T> conv2d(const TensorT<T>& x, const TensorT<T>& weight, const TensorT<T>& bias, Conv2dOptions options) {
  const ConvGeometry g = checked_conv_geometry("conv2d", x, weight, bias, options);
  TensorT<T> y = conv2d_forward(x, weight, bias, g);
  if (should_record<T>({&x, &weight, &bias}))
    record<T>(y, "conv2d", {&x, &weight, &bias},
              [x, weight, bias, g](const TensorT<T>& grad) { conv2d_backward(grad, x, weight, bias, g); });
  return y;
}

#define INSTANTIATE(T) \
  template TensorT<T> conv2d<T>(const TensorT<T>&, const TensorT<T>&, const TensorT<T>&, Conv2dOptions);
LCD_FOR_EACH_SCALAR(INSTANTIATE)
}  // namespace lcd
