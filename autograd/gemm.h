// The one GEMM entry point: dst (+)= lhs · rhs on Eigen expressions (maps, transposes), threaded by lcdkit
// rather than by Eigen (the build defines EIGEN_DONT_PARALLELIZE). Products below kSerialGemmWork
// multiply-adds run on the calling thread (Eigen's own threading spin-waits on small products: measured 148 ms
// for a batch-2 UNet forward); larger ones are split along the larger output dimension into one block per
// thread. Inside an OpenMP parallel region it always runs serially (no nested parallelism).
#pragma once
#include <omp.h>

#include <algorithm>
#include <cstdint>

namespace lcd {

constexpr double kSerialGemmWork = 1 << 21;

// dst = lhs·rhs (accumulate = false) or dst += lhs·rhs.
template <typename Dst, typename Lhs, typename Rhs>
void gemm(Dst&& dst, const Lhs& lhs, const Rhs& rhs, bool accumulate) {
  const int64_t m = dst.rows(), n = dst.cols(), k = lhs.cols();
  const int threads = omp_in_parallel() ? 1 : omp_get_max_threads();
  const double work = double(m) * double(n) * double(k);
  if (threads == 1 || work < kSerialGemmWork) {
    if (accumulate)
      dst.noalias() += lhs * rhs;
    else
      dst.noalias() = lhs * rhs;
    return;
  }
  const bool split_rows = m >= n;
  const int64_t extent = split_rows ? m : n;
  const int64_t block = ((extent + threads - 1) / threads + 15) / 16 * 16;  // multiples of 16 keep SIMD panels whole
#pragma omp parallel for schedule(static) num_threads(threads)
  for (int t = 0; t < threads; ++t) {
    const int64_t begin = std::min<int64_t>(t * block, extent), len = std::min<int64_t>(block, extent - begin);
    if (len <= 0) continue;
    if (split_rows) {
      auto d = dst.middleRows(begin, len);
      if (accumulate)
        d.noalias() += lhs.middleRows(begin, len) * rhs;
      else
        d.noalias() = lhs.middleRows(begin, len) * rhs;
    } else {
      auto d = dst.middleCols(begin, len);
      if (accumulate)
        d.noalias() += lhs * rhs.middleCols(begin, len);
      else
        d.noalias() = lhs * rhs.middleCols(begin, len);
    }
  }
}

}  // namespace lcd
