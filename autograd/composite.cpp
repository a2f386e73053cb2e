// Compositions of registered ops (not ops themselves, so they need no gradient check of their own):
// mean, transpose, split, chunk.
#include "autograd/errors.h"
#include "autograd/ops.h"
#include "autograd/ops/instantiate.h"

namespace lcd {

template <typename T>
TensorT<T> mean(const TensorT<T>& x, const std::vector<int>& axes, bool keepdim) {
  int64_t count = 1;
  for (int a : axes) count *= x.size(a);
  return scale(sum(x, axes, keepdim), 1.0 / static_cast<double>(count));
}

template <typename T>
TensorT<T> mean(const TensorT<T>& x) {
  return scale(sum(x), 1.0 / static_cast<double>(x.numel()));
}

template <typename T>
TensorT<T> transpose(const TensorT<T>& x, int axis0, int axis1) {
  std::vector<int> order(x.ndim());
  for (int i = 0; i < x.ndim(); ++i) order[i] = i;
  std::swap(order[x.shape().normalize_axis(axis0)], order[x.shape().normalize_axis(axis1)]);
  return permute(x, order);
}

template <typename T>
std::vector<TensorT<T>> split(const TensorT<T>& x, const std::vector<int64_t>& sizes, int axis) {
  int64_t total = 0;
  for (int64_t s : sizes) total += s;
  if (total != x.size(axis))
    throw ShapeError("split: sizes add up to " + std::to_string(total) + ", axis " + std::to_string(axis) + " of " +
                     x.shape().str() + " has " + std::to_string(x.size(axis)));
  std::vector<TensorT<T>> parts;
  int64_t start = 0;
  for (int64_t s : sizes) {
    parts.push_back(slice(x, axis, start, s));
    start += s;
  }
  return parts;
}

template <typename T>
std::vector<TensorT<T>> chunk(const TensorT<T>& x, int chunks, int axis) {
  if (chunks < 1 || x.size(axis) % chunks != 0)
    throw ShapeError("chunk: " + std::to_string(chunks) + " chunks do not divide axis " + std::to_string(axis) +
                     " of " + x.shape().str());
  return split(x, std::vector<int64_t>(chunks, x.size(axis) / chunks), axis);
}

#define INSTANTIATE(T)                                                                        \
  template TensorT<T> mean<T>(const TensorT<T>&, const std::vector<int>&, bool);             \
  template TensorT<T> mean<T>(const TensorT<T>&);                                            \
  template TensorT<T> transpose<T>(const TensorT<T>&, int, int);                             \
  template std::vector<TensorT<T>> split<T>(const TensorT<T>&, const std::vector<int64_t>&, int); \
  template std::vector<TensorT<T>> chunk<T>(const TensorT<T>&, int, int);
LCD_FOR_EACH_SCALAR(INSTANTIATE)
}  // namespace lcd
