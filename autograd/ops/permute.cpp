// permute: y has axes x.axes[order[i]]; a copy. ∂L/∂x = g permuted by the inverse order.
#include "autograd/errors.h"
#include "autograd/op_registry.h"
#include "autograd/ops.h"
#include "autograd/ops/instantiate.h"
#include "autograd/parallel.h"

namespace lcd {
LCD_DIFFERENTIABLE_OP(permute);

// y[i0..] = x[...] with y's axis i being x's axis order[i]; accumulates when `add` is set.
template <typename T>
static void permute_copy(const T* x, const Shape& xs, const std::vector<int>& order, T* y, bool add) {
  constexpr int R = Shape::kMaxRank;
  const int rank = xs.rank();
  auto xstr = contiguous_strides(xs);
  std::array<int64_t, R> ydims{}, src_stride{};
  ydims.fill(1);
  const int off = R - rank;
  for (int i = 0; i < rank; ++i) {
    ydims[off + i] = xs[order[i]];
    src_stride[off + i] = xstr[order[i]];
  }
  const int64_t inner = ydims[R - 1], outer = xs.numel() / (inner ? inner : 1);
  parallel_for(outer, xs.numel() > 32768, [&](int64_t row) {
    int64_t rem = row, src = 0;
    for (int ax = R - 2; ax >= 0; --ax) {
      src += (rem % ydims[ax]) * src_stride[ax];
      rem /= ydims[ax];
    }
    T* dst = y + row * inner;
    const int64_t st = src_stride[R - 1];
    if (add)
      for (int64_t k = 0; k < inner; ++k) dst[k] += x[src + k * st];
    else
      for (int64_t k = 0; k < inner; ++k) dst[k] = x[src + k * st];
  });
}

static Shape permuted_shape(const Shape& s, const std::vector<int>& order) {
  std::vector<int64_t> d(order.size());
  for (size_t i = 0; i < order.size(); ++i) d[i] = s[order[i]];
  return Shape(d);
}

template <typename T>
static TensorT<T> permute_forward(const TensorT<T>& x, const std::vector<int>& order) {
  auto y = TensorT<T>::empty(permuted_shape(x.shape(), order));
  permute_copy(x.data(), x.shape(), order, y.data(), false);
  return y;
}

template <typename T>
static void permute_backward(const TensorT<T>& grad, const TensorT<T>& x, const std::vector<int>& order) {
  std::vector<int> inverse(order.size());
  for (size_t i = 0; i < order.size(); ++i) inverse[order[i]] = static_cast<int>(i);
  permute_copy(grad.data(), grad.shape(), inverse, grad_buffer(x), true);
}

template <typename T>
TensorT<T> permute(const TensorT<T>& x, const std::vector<int>& order) {
  std::vector<int> ord;
  std::vector<bool> seen(x.ndim(), false);
  if (static_cast<int>(order.size()) != x.ndim()) throw ShapeError("permute: order length does not match " + x.shape().str());
  for (int a : order) {
    int n = x.shape().normalize_axis(a);
    if (seen[n]) throw ShapeError("permute: repeated axis " + std::to_string(a));
    seen[n] = true;
    ord.push_back(n);
  }
  TensorT<T> y = permute_forward(x, ord);
  if (should_record<T>({&x}))
    record<T>(y, "permute", {&x}, [x, ord](const TensorT<T>& g) { permute_backward(g, x, ord); });
  return y;
}

#define INSTANTIATE(T) template TensorT<T> permute<T>(const TensorT<T>&, const std::vector<int>&);
LCD_FOR_EACH_SCALAR(INSTANTIATE)
}  // namespace lcd
