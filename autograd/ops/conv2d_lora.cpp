// conv2d with one LoRA branch fused in (DESIGN.md §5): y = W ∗ x + b + s · B (A ∗ x), where A (r, Cin, kh, kw)
// is a convolution like W and B (Cout, r, 1, 1) a pointwise one. Per chunk of samples the columns of x are
// built once and serve both W and A:
//   cols = im2col(x),  h = A·cols (r, m·S),  Y = b + W·cols + (s·B)·h
// Backward, with G = ∂Y and Gh = (s·B)ᵀ·G:
//   ∂B += s·G·hᵀ,  ∂A += Gh·colsᵀ,  ∂W += G·colsᵀ,  ∂b += Σ G,  ∂cols = Wᵀ·G + Aᵀ·Gh → col2im into ∂x.
// Separate conv2d calls for the branch would build the columns twice in each direction and run the col2im
// twice; in LoRA training W and b are frozen, so their gradients are skipped (needs_grad).
#include <omp.h>

#include <vector>

#include "autograd/errors.h"
#include "autograd/flop_counter.h"
#include "autograd/gemm.h"
#include "autograd/op_registry.h"
#include "autograd/ops.h"
#include "autograd/ops/conv_chunks.h"
#include "autograd/ops/instantiate.h"

namespace lcd {
LCD_DIFFERENTIABLE_OP(conv2d_lora);

using namespace conv_chunks;

namespace {

template <typename T>
struct LoraConv {
  const TensorT<T>&x, &w, &b, &down, &up;
  double scale;
  ConvGeometry g;
  int64_t cout() const { return w.size(0); }
  int64_t rank() const { return down.size(0); }
  // s·B as a (Cout, r) matrix.
  RowMatrix<T> scaled_up() const { return ConstMatrixMap<T>(up.data(), cout(), rank()) * T(scale); }
};

template <typename T>
TensorT<T> forward(const LoraConv<T>& c) {
  const ConvGeometry& g = c.g;
  const int64_t cout = c.cout(), r = c.rank(), s = g.out_h * g.out_w, in_sample = g.channels * g.height * g.width;
  FlopCounter::add(2 * (cout + r) * g.patch() * g.columns() + 2 * cout * r * g.columns());
  auto y = TensorT<T>::empty({g.batch, cout, g.out_h, g.out_w});
  const Chunking ch = chunking(g);
  const T* bp = c.b.defined() ? c.b.data() : nullptr;
  ConstMatrixMap<T> wm(c.w.data(), cout, g.patch()), am(c.down.data(), r, g.patch());
  const RowMatrix<T> sb = c.scaled_up();
#pragma omp parallel if (ch.count >= omp_get_max_threads())
  {
    RowMatrix<T> cols, h, out;
#pragma omp for schedule(static)
    for (int64_t k = 0; k < ch.count; ++k) {
      const int64_t n0 = k * ch.size, m = std::min(ch.size, g.batch - n0);
      cols.resize(g.patch(), m * s);
      h.resize(r, m * s);
      out.resize(cout, m * s);
      columns_of(c.x.data() + n0 * in_sample, chunk_geometry(g, m), cols.data());
      for (int64_t o = 0; o < cout; ++o) out.row(o).setConstant(bp ? bp[o] : T(0));
      gemm(out, wm, cols, true);
      gemm(h, am, cols, false);
      gemm(out, sb, h, true);
      cn_to_nchw(out.data(), m, cout, s, y.data() + n0 * cout * s, false);
    }
  }
  return y;
}

template <typename T>
void backward(const TensorT<T>& grad, const LoraConv<T>& c) {
  const ConvGeometry& g = c.g;
  const int64_t cout = c.cout(), r = c.rank(), s = g.out_h * g.out_w, in_sample = g.channels * g.height * g.width;
  const bool want_w = needs_grad(c.w), want_b = needs_grad(c.b), want_x = needs_grad(c.x);
  const bool want_a = needs_grad(c.down), want_up = needs_grad(c.up);
  const Chunking ch = chunking(g);
  const int threads = ch.count >= omp_get_max_threads() ? omp_get_max_threads() : 1;
  // Per-thread partial sums, added in thread order afterwards (reproducible for a given thread count).
  std::vector<RowMatrix<T>> dw(want_w ? threads : 0, RowMatrix<T>::Zero(cout, g.patch()));
  std::vector<RowMatrix<T>> da(want_a ? threads : 0, RowMatrix<T>::Zero(r, g.patch()));
  std::vector<RowMatrix<T>> dup(want_up ? threads : 0, RowMatrix<T>::Zero(cout, r));
  std::vector<Eigen::Matrix<T, Eigen::Dynamic, 1>> db(want_b ? threads : 0, Eigen::Matrix<T, Eigen::Dynamic, 1>::Zero(cout));
  T* dx = want_x ? grad_buffer(c.x) : nullptr;
  ConstMatrixMap<T> wm(c.w.data(), cout, g.patch()), am(c.down.data(), r, g.patch());
  const RowMatrix<T> sb = c.scaled_up();
#pragma omp parallel num_threads(threads) if (threads > 1)
  {
    const int t = omp_get_thread_num();
    RowMatrix<T> gcn, cols, h, gh, dcols;
#pragma omp for schedule(static)
    for (int64_t k = 0; k < ch.count; ++k) {
      const int64_t n0 = k * ch.size, m = std::min(ch.size, g.batch - n0);
      const ConvGeometry cg = chunk_geometry(g, m);
      gcn.resize(cout, m * s);
      nchw_to_cn(grad.data() + n0 * cout * s, m, cout, s, gcn.data());
      if (want_b) db[t] += gcn.rowwise().sum();
      if (want_w || want_a || want_up) {
        cols.resize(g.patch(), m * s);
        columns_of(c.x.data() + n0 * in_sample, cg, cols.data());
      }
      if (want_w) gemm(dw[t], gcn, cols.transpose(), true);
      if (want_up) {
        h.resize(r, m * s);
        gemm(h, am, cols, false);
        gemm(dup[t], gcn, h.transpose(), true);  // times s below
      }
      if (want_a || want_x) {
        gh.resize(r, m * s);
        gemm(gh, sb.transpose(), gcn, false);
      }
      if (want_a) gemm(da[t], gh, cols.transpose(), true);
      if (want_x) {
        dcols.resize(g.patch(), m * s);
        gemm(dcols, wm.transpose(), gcn, false);
        gemm(dcols, am.transpose(), gh, true);
        if (is_pointwise(g))
          cn_to_nchw(dcols.data(), m, g.channels, s, dx + n0 * in_sample, true);
        else
          col2im_accumulate(dcols.data(), cg, dx + n0 * in_sample);
      }
    }
  }
  for (const auto& p : dw) MatrixMap<T>(grad_buffer(c.w), cout, g.patch()) += p;
  for (const auto& p : da) MatrixMap<T>(grad_buffer(c.down), r, g.patch()) += p;
  for (const auto& p : dup) MatrixMap<T>(grad_buffer(c.up), cout, r) += T(c.scale) * p;
  for (const auto& p : db) Eigen::Map<Eigen::Matrix<T, Eigen::Dynamic, 1>>(grad_buffer(c.b), cout) += p;
}

}  // namespace

template <typename T>
TensorT<T> conv2d_lora(const TensorT<T>& x, const TensorT<T>& weight, const TensorT<T>& bias, const TensorT<T>& down,
                       const TensorT<T>& up, double scale, Conv2dOptions options) {
  const ConvGeometry g = checked_conv_geometry("conv2d_lora", x, weight, bias, options);
  if (down.ndim() != 4 || down.size(1) != weight.size(1) || down.size(2) != weight.size(2) ||
      down.size(3) != weight.size(3))
    throw ShapeError("conv2d_lora: LoRA down " + down.shape().str() + " does not fit weight " + weight.shape().str());
  if (up.ndim() != 4 || up.size(0) != weight.size(0) || up.size(1) != down.size(0) || up.size(2) != 1 ||
      up.size(3) != 1)
    throw ShapeError("conv2d_lora: LoRA up " + up.shape().str() + " does not fit down " + down.shape().str() +
                     " and weight " + weight.shape().str());
  TensorT<T> y = forward(LoraConv<T>{x, weight, bias, down, up, scale, g});
  if (should_record<T>({&x, &weight, &bias, &down, &up}))
    record<T>(y, "conv2d_lora", {&x, &weight, &bias, &down, &up}, [x, weight, bias, down, up, scale, g](const TensorT<T>& grad) {
      backward(grad, LoraConv<T>{x, weight, bias, down, up, scale, g});
    });
  return y;
}

#define INSTANTIATE(T)                                                                                    \
  template TensorT<T> conv2d_lora<T>(const TensorT<T>&, const TensorT<T>&, const TensorT<T>&, const TensorT<T>&, \
                                     const TensorT<T>&, double, Conv2dOptions);
LCD_FOR_EACH_SCALAR(INSTANTIATE)
}  // namespace lcd
