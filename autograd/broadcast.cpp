// Broadcasting rules and the gradient reduction back to an operand's shape.
#include "autograd/broadcast.h"

#include <vector>

#include "autograd/errors.h"
#include "autograd/parallel.h"

namespace lcd {

Shape broadcast_shapes(const Shape& a, const Shape& b) {
  int rank = std::max(a.rank(), b.rank());
  std::vector<int64_t> dims(rank);
  for (int i = 0; i < rank; ++i) {
    int ia = a.rank() - rank + i, ib = b.rank() - rank + i;
    int64_t da = ia >= 0 ? a[ia] : 1, db = ib >= 0 ? b[ib] : 1;
    if (da != db && da != 1 && db != 1)
      throw ShapeError("shapes " + a.str() + " and " + b.str() + " cannot be broadcast together");
    dims[i] = da == 1 ? db : da;
  }
  return Shape(dims);
}

std::array<int64_t, Shape::kMaxRank> padded_dims(const Shape& shape) {
  std::array<int64_t, Shape::kMaxRank> d;
  d.fill(1);
  int off = Shape::kMaxRank - shape.rank();
  for (int i = 0; i < shape.rank(); ++i) d[off + i] = shape[i];
  return d;
}

OuterAxes outer_axes(const std::array<int64_t, Shape::kMaxRank>& dims) {
  OuterAxes axes;
  for (int ax = Shape::kMaxRank - 2; ax >= 0; --ax)
    if (dims[ax] > 1) axes.axis[axes.count++] = ax;
  return axes;
}

std::array<int64_t, Shape::kMaxRank> broadcast_strides(const Shape& in, const Shape& out) {
  std::array<int64_t, Shape::kMaxRank> s{};
  auto own = contiguous_strides(in);
  int off_in = Shape::kMaxRank - in.rank();
  int off_out = Shape::kMaxRank - out.rank();
  for (int ax = 0; ax < Shape::kMaxRank; ++ax) {
    int i = ax - off_in;
    if (i < 0) continue;
    if (in[i] != 1) {
      if (ax < off_out || in[i] != out[ax - off_out])
        throw ShapeError("shape " + in.str() + " does not broadcast to " + out.str());
      s[ax] = own[i];
    }
  }
  return s;
}

template <typename T>
void reduce_to_shape_accumulate(const TensorT<T>& g, const Shape& target, T* dst) {
  const T* src = g.data();
  if (g.shape().numel() == target.numel()) {  // same element order: no axis was broadcast
    const int64_t n = target.numel();
    parallel_ranges(n, n > 65536, [&](int64_t begin, int64_t end) {
#pragma omp simd
      for (int64_t i = begin; i < end; ++i) dst[i] += src[i];
    });
    return;
  }
  // Serial over g so that the summation order, and so the result, is independent of the thread count.
  constexpr int R = Shape::kMaxRank;
  auto d = padded_dims(g.shape());
  auto st = broadcast_strides(target, g.shape());
  const int64_t inner = d[R - 1];
  const int64_t outer = g.numel() / (inner ? inner : 1);
  const OuterAxes axes = outer_axes(d);
  for (int64_t row = 0; row < outer; ++row) {
    int64_t rem = row, it = 0;
    for (int n = 0; n < axes.count; ++n) {
      const int ax = axes.axis[n];
      it += (rem % d[ax]) * st[ax];
      rem /= d[ax];
    }
    const T* s = src + row * inner;
    if (st[R - 1] == 0) {
      T acc = 0;
      for (int64_t k = 0; k < inner; ++k) acc += s[k];
      dst[it] += acc;
    } else {
      T* t = dst + it;
#pragma omp simd
      for (int64_t k = 0; k < inner; ++k) t[k] += s[k];
    }
  }
}

template void reduce_to_shape_accumulate<float>(const TensorT<float>&, const Shape&, float*);
template void reduce_to_shape_accumulate<double>(const TensorT<double>&, const Shape&, double*);

}  // namespace lcd
