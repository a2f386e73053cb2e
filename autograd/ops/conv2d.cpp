// conv2d (NCHW, any kernel, stride, padding): im2col then one GEMM over the whole batch,
//   Y (Cout, N·Ho·Wo) = W (Cout, Cin·kh·kw) · cols (Cin·kh·kw, N·Ho·Wo), + bias.
// Backward: ∂W = G·colsᵀ, ∂cols = Wᵀ·G (then col2im), ∂b = Σ G. The columns are recomputed in backward rather
// than saved (they are kh·kw times the input). 1×1 stride-1 convolutions skip im2col.
#include <cstring>

#include "autograd/errors.h"
#include "autograd/flop_counter.h"
#include "autograd/op_registry.h"
#include "autograd/ops.h"
#include "autograd/ops/instantiate.h"
#include "autograd/ops/kernels.h"

namespace lcd {
LCD_DIFFERENTIABLE_OP(conv2d);

static ConvGeometry conv_geometry(const Shape& x, const Shape& w, const Conv2dOptions& o) {
  ConvGeometry g{x[0], x[1], x[2], x[3], w[2], w[3], o.stride, o.padding, 0, 0};
  g.out_h = (g.height + 2 * g.padding + o.extra_pad_end - g.kernel_h) / g.stride + 1;
  g.out_w = (g.width + 2 * g.padding + o.extra_pad_end - g.kernel_w) / g.stride + 1;
  return g;
}

static bool is_pointwise(const ConvGeometry& g) {
  return g.kernel_h == 1 && g.kernel_w == 1 && g.stride == 1 && g.padding == 0 && g.out_h == g.height && g.out_w == g.width;
}

// (N, C, S) → (C, N·S) and back: the batch-major ↔ channel-major shuffle around the GEMM.
template <typename T>
static void nchw_to_cn(const T* src, int64_t n, int64_t c, int64_t s, T* dst) {
#pragma omp parallel for schedule(static) if (n * c * s > 32768)
  for (int64_t ci = 0; ci < c; ++ci)
    for (int64_t ni = 0; ni < n; ++ni) std::memcpy(dst + (ci * n + ni) * s, src + (ni * c + ci) * s, sizeof(T) * s);
}
template <typename T>
static void cn_to_nchw(const T* src, int64_t n, int64_t c, int64_t s, T* dst) {
#pragma omp parallel for schedule(static) if (n * c * s > 32768)
  for (int64_t ni = 0; ni < n; ++ni)
    for (int64_t ci = 0; ci < c; ++ci) std::memcpy(dst + (ni * c + ci) * s, src + (ci * n + ni) * s, sizeof(T) * s);
}

// The column matrix of x (patch × columns).
template <typename T>
static TensorT<T> columns_of(const TensorT<T>& x, const ConvGeometry& g) {
  auto cols = TensorT<T>::empty({g.patch(), g.columns()});
  if (is_pointwise(g))
    nchw_to_cn(x.data(), g.batch, g.channels, g.height * g.width, cols.data());
  else
    im2col(x.data(), g, cols.data());
  return cols;
}

template <typename T>
static TensorT<T> conv2d_forward(const TensorT<T>& x, const TensorT<T>& w, const TensorT<T>& b, const ConvGeometry& g) {
  const int64_t cout = w.size(0), s = g.out_h * g.out_w;
  FlopCounter::add(2 * cout * g.patch() * g.columns());
  TensorT<T> cols = columns_of(x, g);
  auto y_cn = TensorT<T>::empty({cout, g.columns()});
  auto ym = y_cn.matrix(cout, g.columns());
  ym.noalias() = w.matrix(cout, g.patch()) * cols.matrix(g.patch(), g.columns());
  if (b.defined()) ym.colwise() += Eigen::Map<const Eigen::Matrix<T, Eigen::Dynamic, 1>>(b.data(), cout);
  auto y = TensorT<T>::empty({g.batch, cout, g.out_h, g.out_w});
  cn_to_nchw(y_cn.data(), g.batch, cout, s, y.data());
  return y;
}

template <typename T>
static void conv2d_backward(const TensorT<T>& grad, const TensorT<T>& x, const TensorT<T>& w, const TensorT<T>& b,
                            const ConvGeometry& g) {
  const int64_t cout = w.size(0), s = g.out_h * g.out_w;
  auto g_cn = TensorT<T>::empty({cout, g.columns()});
  nchw_to_cn(grad.data(), g.batch, cout, s, g_cn.data());
  auto gm = g_cn.matrix(cout, g.columns());
  if (needs_grad(b))
    Eigen::Map<Eigen::Matrix<T, Eigen::Dynamic, 1>>(grad_buffer(b), cout) += gm.rowwise().sum();
  if (needs_grad(w)) {
    TensorT<T> cols = columns_of(x, g);
    MatrixMap<T>(grad_buffer(w), cout, g.patch()).noalias() += gm * cols.matrix(g.patch(), g.columns()).transpose();
  }
  if (needs_grad(x)) {
    auto dcols = TensorT<T>::empty({g.patch(), g.columns()});
    dcols.matrix(g.patch(), g.columns()).noalias() = w.matrix(cout, g.patch()).transpose() * gm;
    if (is_pointwise(g)) {
      auto dx = TensorT<T>::empty(x.shape());
      cn_to_nchw(dcols.data(), g.batch, g.channels, g.height * g.width, dx.data());
      accumulate_grad(x, dx);
    } else {
      col2im_accumulate(dcols.data(), g, grad_buffer(x));
    }
  }
}

template <typename T>
TensorT<T> conv2d(const TensorT<T>& x, const TensorT<T>& weight, const TensorT<T>& bias, Conv2dOptions options) {
  if (x.ndim() != 4 || weight.ndim() != 4 || x.size(1) != weight.size(1))
    throw ShapeError("conv2d: input " + x.shape().str() + " does not fit weight " + weight.shape().str());
  if (bias.defined() && (bias.ndim() != 1 || bias.size(0) != weight.size(0)))
    throw ShapeError("conv2d: bias " + bias.shape().str() + " does not fit weight " + weight.shape().str());
  if (options.stride < 1 || options.padding < 0 || options.extra_pad_end < 0) throw ValueError("conv2d: stride must be ≥ 1 and padding ≥ 0");
  const ConvGeometry g = conv_geometry(x.shape(), weight.shape(), options);
  if (g.out_h < 1 || g.out_w < 1)
    throw ShapeError("conv2d: kernel " + weight.shape().str() + " larger than padded input " + x.shape().str());
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
