// Normalisation over contiguous rows, shared by group_norm and layer_norm: per row r of length m,
// x̂ = (x − μ_r)·rstd_r with rstd_r = 1/√(var_r + eps) (biased variance), and the backward
// ∂x = rstd·(∂x̂ − mean(∂x̂) − x̂·mean(∂x̂ ⊙ x̂)).
#pragma once
#include <cmath>
#include <cstdint>

namespace lcd {

// Statistics accumulate in double whatever T is, so float results match a float64 reference closely.
template <typename T>
void row_moments(const T* x, int64_t rows, int64_t m, double eps, T* mean, T* rstd) {
#pragma omp parallel for schedule(static) if (rows * m > 32768)
  for (int64_t r = 0; r < rows; ++r) {
    const T* xr = x + r * m;
    double s = 0;
    for (int64_t i = 0; i < m; ++i) s += xr[i];
    const double mu = s / m;
    double v = 0;
    for (int64_t i = 0; i < m; ++i) v += (xr[i] - mu) * (xr[i] - mu);
    mean[r] = static_cast<T>(mu);
    rstd[r] = static_cast<T>(1.0 / std::sqrt(v / m + eps));
  }
}

}  // namespace lcd
