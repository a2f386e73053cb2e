// sum: y = Σ x over the given axes (keepdim or not). ∂L/∂x = g broadcast back over the summed axes.
#include <algorithm>

#include "autograd/broadcast.h"
#include "autograd/errors.h"
#include "autograd/op_registry.h"
#include "autograd/ops.h"
#include "autograd/ops/instantiate.h"

namespace lcd {
LCD_DIFFERENTIABLE_OP(sum);

// The shape with the summed axes kept as size 1, and the shape with them dropped.
static void reduced_shapes(const Shape& in, const std::vector<int>& axes, Shape* kept, Shape* dropped) {
  std::vector<bool> reduce(in.rank(), false);
  for (int a : axes) reduce[in.normalize_axis(a)] = true;
  std::vector<int64_t> k, d;
  for (int i = 0; i < in.rank(); ++i) {
    k.push_back(reduce[i] ? 1 : in[i]);
    if (!reduce[i]) d.push_back(in[i]);
  }
  *kept = Shape(k);
  *dropped = Shape(d);
}

template <typename T>
static TensorT<T> sum_forward(const TensorT<T>& x, const Shape& kept) {
  auto y = TensorT<T>::zeros(kept);
  reduce_to_shape_accumulate(x, kept, y.data());
  return y;
}

template <typename T>
static void sum_backward(const TensorT<T>& grad_kept, const TensorT<T>& x) {
  T* gx = grad_buffer(x);
  const T* g = grad_kept.data();
  for_each_broadcast(x.shape(), x.shape(), grad_kept.shape(), [&](int64_t o, int64_t, int64_t ig) { gx[o] += g[ig]; });
}

template <typename T>
TensorT<T> sum(const TensorT<T>& x, const std::vector<int>& axes, bool keepdim) {
  Shape kept, dropped;
  reduced_shapes(x.shape(), axes, &kept, &dropped);
  TensorT<T> y = sum_forward(x, kept);
  const Shape out_shape = keepdim ? kept : dropped;
  y = TensorT<T>::from_storage(out_shape, y.storage());
  if (should_record<T>({&x}))
    record<T>(y, "sum", {&x}, [x, kept](const TensorT<T>& g) {
      sum_backward(TensorT<T>::from_storage(kept, g.storage()), x);
    });
  return y;
}

template <typename T>
TensorT<T> sum(const TensorT<T>& x) {
  std::vector<int> all(x.ndim());
  for (int i = 0; i < x.ndim(); ++i) all[i] = i;
  return sum(x, all, false);
}

#define INSTANTIATE(T)                                                              \
  template TensorT<T> sum<T>(const TensorT<T>&, const std::vector<int>&, bool); \
  template TensorT<T> sum<T>(const TensorT<T>&);
LCD_FOR_EACH_SCALAR(INSTANTIATE)
}  // namespace lcd
