// NumPy-style broadcasting: the result shape of two operands, iteration over a broadcast pair, and the
// reverse direction (summing a gradient back to an operand's shape), used by accumulate_grad.
#pragma once
#include <array>

#include "autograd/parallel.h"
#include "autograd/tensor.h"

namespace lcd {

// The broadcast result of a and b; throws ShapeError naming both when they are incompatible.
Shape broadcast_shapes(const Shape& a, const Shape& b);

// Strides (in elements) for reading `in` as if it had shape `out` (0 along broadcast axes), padded to
// Shape::kMaxRank axes on the left.
std::array<int64_t, Shape::kMaxRank> broadcast_strides(const Shape& in, const Shape& out);

// Output shape padded on the left to Shape::kMaxRank axes.
std::array<int64_t, Shape::kMaxRank> padded_dims(const Shape& shape);

// The outer axes (all but the last) of padded dims that are longer than 1, innermost first: a row number splits
// into its offsets with one division per such axis (the padding axes of 1 cost nothing).
struct OuterAxes {
  std::array<int, Shape::kMaxRank> axis{};
  int count = 0;
};
OuterAxes outer_axes(const std::array<int64_t, Shape::kMaxRank>& dims);

// Calls f(out_index, a_index, b_index) for every element of `out`, in parallel over outer rows. A row's
// offsets take one division per outer axis longer than 1 (the padding axes of 1 are skipped), and where both
// operands run contiguously along the row (a (N, H, W, C) tensor plus a (N, 1, 1, C) one, a gradient summed back
// over H and W) the row is a plain vector loop: per element this was index arithmetic, not the add.
template <typename F>
void for_each_broadcast(const Shape& out, const Shape& a, const Shape& b, F&& f) {
  constexpr int R = Shape::kMaxRank;
  auto d = padded_dims(out);
  auto sa = broadcast_strides(a, out);
  auto sb = broadcast_strides(b, out);
  const int64_t inner = d[R - 1];
  const int64_t outer = out.numel() / (inner ? inner : 1);
  if (out.numel() == 0) return;
  const OuterAxes axes = outer_axes(d);
  const bool unit = sa[R - 1] == 1 && sb[R - 1] == 1;
  parallel_for(outer, out.numel() > 65536, [&](int64_t row) {
    int64_t rem = row, ia = 0, ib = 0;
    for (int n = 0; n < axes.count; ++n) {
      const int ax = axes.axis[n];
      const int64_t i = rem % d[ax];
      rem /= d[ax];
      ia += i * sa[ax];
      ib += i * sb[ax];
    }
    const int64_t base = row * inner;
    if (unit) {
#pragma omp simd
      for (int64_t k = 0; k < inner; ++k) f(base + k, ia + k, ib + k);
    } else {
      for (int64_t k = 0; k < inner; ++k) f(base + k, ia + k * sa[R - 1], ib + k * sb[R - 1]);
    }
  });
}

// Sums g (shape `g.shape()`, a broadcast of `target`) over the broadcast axes into dst (shape target),
// adding to what dst holds.
template <typename T>
void reduce_to_shape_accumulate(const TensorT<T>& g, const Shape& target, T* dst);

}  // namespace lcd
