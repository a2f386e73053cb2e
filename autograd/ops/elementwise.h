// Shared loops for elementwise ops: a parallel unary map and a broadcasting binary map (no tape).
#pragma once
#include "autograd/broadcast.h"
#include "autograd/parallel.h"
#include "autograd/tensor.h"

namespace lcd {

constexpr int64_t kParallelThreshold = 32768;  // below this, threading costs more than it saves

// y[i] = f(x[i])
template <typename T, typename F>
TensorT<T> map_unary(const TensorT<T>& x, F f) {
  auto y = TensorT<T>::empty(x.shape());
  const T* xp = x.data();
  T* yp = y.data();
  const int64_t n = x.numel();
  parallel_ranges(n, n > kParallelThreshold, [&](int64_t begin, int64_t end) {
#pragma omp simd
    for (int64_t i = begin; i < end; ++i) yp[i] = f(xp[i]);
  });
  return y;
}

// y = f(a, b) with broadcasting; the result has the broadcast shape.
template <typename T, typename F>
TensorT<T> map_binary(const TensorT<T>& a, const TensorT<T>& b, F f) {
  const Shape out = a.shape() == b.shape() ? a.shape() : broadcast_shapes(a.shape(), b.shape());
  auto y = TensorT<T>::empty(out);
  const T* ap = a.data();
  const T* bp = b.data();
  T* yp = y.data();
  if (a.shape() == b.shape()) {
    const int64_t n = y.numel();
    parallel_ranges(n, n > kParallelThreshold, [&](int64_t begin, int64_t end) {
#pragma omp simd
      for (int64_t i = begin; i < end; ++i) yp[i] = f(ap[i], bp[i]);
    });
  } else {
    for_each_broadcast(out, a.shape(), b.shape(),
                       [&](int64_t o, int64_t ia, int64_t ib) { yp[o] = f(ap[ia], bp[ib]); });
  }
  return y;
}

}  // namespace lcd

namespace lcd {

// r[i] = f(a[i], b[i], c[i]) for three tensors of one shape (a unary op's backward: g, x, y).
template <typename T, typename F>
TensorT<T> map_ternary(const TensorT<T>& a, const TensorT<T>& b, const TensorT<T>& c, F f) {
  auto r = TensorT<T>::empty(a.shape());
  const T* ap = a.data();
  const T* bp = b.data();
  const T* cp = c.data();
  T* rp = r.data();
  const int64_t n = a.numel();
  parallel_ranges(n, n > kParallelThreshold, [&](int64_t begin, int64_t end) {
#pragma omp simd
    for (int64_t i = begin; i < end; ++i) rp[i] = f(ap[i], bp[i], cp[i]);
  });
  return r;
}

}  // namespace lcd

#include <Eigen/Core>
#include <unsupported/Eigen/SpecialFunctions>

namespace lcd {

template <typename T>
using ArrayMap = Eigen::Map<Eigen::Array<T, Eigen::Dynamic, 1>>;
template <typename T>
using ConstArrayMap = Eigen::Map<const Eigen::Array<T, Eigen::Dynamic, 1>>;

// y = f(x) where f maps an Eigen array expression (so exp/erf/tanh use Eigen's SIMD implementations rather
// than scalar libm calls); processed in cache-sized chunks, in parallel for large tensors.
template <typename T, typename F>
TensorT<T> map_array(const TensorT<T>& x, F f) {
  auto y = TensorT<T>::empty(x.shape());
  constexpr int64_t kChunk = 4096;
  const int64_t n = x.numel(), chunks = (n + kChunk - 1) / kChunk;
  const T* xp = x.data();
  T* yp = y.data();
  parallel_for(chunks, n > kParallelThreshold, [&](int64_t c) {
    const int64_t len = std::min(kChunk, n - c * kChunk);
    ArrayMap<T>(yp + c * kChunk, len) = f(ConstArrayMap<T>(xp + c * kChunk, len));
  });
  return y;
}

// r = f(a, b) for two same-shape tensors, as map_array.
template <typename T, typename F>
TensorT<T> map_array2(const TensorT<T>& a, const TensorT<T>& b, F f) {
  auto r = TensorT<T>::empty(a.shape());
  constexpr int64_t kChunk = 4096;
  const int64_t n = a.numel(), chunks = (n + kChunk - 1) / kChunk;
  parallel_for(chunks, n > kParallelThreshold, [&](int64_t c) {
    const int64_t len = std::min(kChunk, n - c * kChunk), off = c * kChunk;
    ArrayMap<T>(r.data() + off, len) = f(ConstArrayMap<T>(a.data() + off, len), ConstArrayMap<T>(b.data() + off, len));
  });
  return r;
}

}  // namespace lcd
