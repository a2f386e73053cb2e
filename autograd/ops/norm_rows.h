// Normalisation over contiguous rows, shared by group_norm and layer_norm: per row r of length m,
// x̂ = (x − μ_r)·rstd_r with rstd_r = 1/√(var_r + eps) (biased variance), and the backward
// ∂x = rstd·(∂x̂ − mean(∂x̂) − x̂·mean(∂x̂ ⊙ x̂)).
#pragma once
#include <cmath>
#include <cstdint>

#include "autograd/parallel.h"

namespace lcd {

// Σ_i f(x_i) in double over eight interleaved partial sums (one SIMD register of doubles), added in a fixed
// order: vectorised without reassociating, and independent of where x sits in memory.
template <typename T, typename F>
double lane_sum(const T* x, int64_t m, F f) {
  double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= m; i += 8)
    for (int k = 0; k < 8; ++k) acc[k] += f(static_cast<double>(x[i + k]));
  for (int k = 0; i < m; ++i, ++k) acc[k] += f(static_cast<double>(x[i]));
  return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

// Statistics accumulate in double whatever T is, so float results match a float64 reference closely.
template <typename T>
void row_moments(const T* x, int64_t rows, int64_t m, double eps, T* mean, T* rstd) {
  parallel_for(rows, rows * m > 32768, [&](int64_t r) {
    const T* xr = x + r * m;
    const double mu = lane_sum(xr, m, [](double v) { return v; }) / m;
    const double var = lane_sum(xr, m, [mu](double v) { return (v - mu) * (v - mu); }) / m;
    mean[r] = static_cast<T>(mu);
    rstd[r] = static_cast<T>(1.0 / std::sqrt(var + eps));
  });
}

}  // namespace lcd
