// layer_norm over the last axis D: x̂ = (x − μ)·rstd per row, y = x̂·γ + β.
// Backward (norm_rows.h): ∂γ = Σ_rows g·x̂, ∂β = Σ_rows g, ∂x = rstd·(d − mean(d) − x̂·mean(d ⊙ x̂)), d = g·γ.
#include <vector>

#include "autograd/errors.h"
#include "autograd/op_registry.h"
#include "autograd/ops.h"
#include "autograd/ops/instantiate.h"
#include "autograd/ops/norm_rows.h"
#include "autograd/parallel.h"

namespace lcd {
LCD_DIFFERENTIABLE_OP(layer_norm);

template <typename T>
static TensorT<T> layer_norm_forward(const TensorT<T>& x, const TensorT<T>& gamma, const TensorT<T>& beta,
                                     double eps, TensorT<T>* mean, TensorT<T>* rstd) {
  const int64_t dim = x.size(-1), rows = x.numel() / dim;
  *mean = TensorT<T>::empty({rows});
  *rstd = TensorT<T>::empty({rows});
  row_moments(x.data(), rows, dim, eps, mean->data(), rstd->data());
  auto y = TensorT<T>::empty(x.shape());
  const T* xp = x.data();
  T* yp = y.data();
  const T* gp = gamma.defined() ? gamma.data() : nullptr;
  const T* bp = beta.defined() ? beta.data() : nullptr;
  parallel_for(rows, x.numel() > 32768, [&](int64_t r) {
    const T mu = mean->data()[r], rs = rstd->data()[r];
    for (int64_t i = 0; i < dim; ++i) {
      const T xhat = (xp[r * dim + i] - mu) * rs;
      yp[r * dim + i] = xhat * (gp ? gp[i] : T(1)) + (bp ? bp[i] : T(0));
    }
  });
  return y;
}

template <typename T>
static void layer_norm_backward(const TensorT<T>& grad, const TensorT<T>& x, const TensorT<T>& gamma,
                                const TensorT<T>& beta, const TensorT<T>& mean, const TensorT<T>& rstd) {
  const int64_t dim = x.size(-1), rows = x.numel() / dim;
  const T* gp = grad.data();
  const T* xp = x.data();
  const T* gam = gamma.defined() ? gamma.data() : nullptr;
  if (needs_grad(gamma) || needs_grad(beta)) {  // serial over rows: deterministic sums
    T* dgam = needs_grad(gamma) ? grad_buffer(gamma) : nullptr;
    T* dbet = needs_grad(beta) ? grad_buffer(beta) : nullptr;
    for (int64_t r = 0; r < rows; ++r) {  // one row at a time, each loop a plain vector loop
      const T mu = mean.data()[r], rs = rstd.data()[r];
      const T* g = gp + r * dim;
      const T* xr = xp + r * dim;
      if (dgam)
        for (int64_t i = 0; i < dim; ++i) dgam[i] += g[i] * (xr[i] - mu) * rs;
      if (dbet)
        for (int64_t i = 0; i < dim; ++i) dbet[i] += g[i];
    }
  }
  if (!needs_grad(x)) return;
  bool fresh = false;  // x's first gradient: written, no zero fill
  T* gx = grad_buffer_to_write(x, &fresh);
  parallel_for(rows, x.numel() > 32768, [&](int64_t r) {
    const T mu = mean.data()[r], rs = rstd.data()[r];
    // d and d ⊙ x̂ of the row (plain vector loops), then mean(d) and mean(d ⊙ x̂) through lane_sum: two serial
    // sums in double waited on each add's latency (the per-row cost of layer_norm's backward)
    thread_local std::vector<T> row_buffer;
    if (static_cast<int64_t>(row_buffer.size()) < 2 * dim) row_buffer.resize(2 * dim);
    T* d_row = row_buffer.data();  // (dim) d = g·γ
    T* dx_row = d_row + dim;       // (dim) d ⊙ x̂
    for (int64_t i = 0; i < dim; ++i) {
      d_row[i] = gp[r * dim + i] * (gam ? gam[i] : T(1));
      dx_row[i] = d_row[i] * (xp[r * dim + i] - mu) * rs;
    }
    auto identity = [](double v) { return v; };
    const double mean_d = lane_sum(d_row, dim, identity) / dim, mean_dx = lane_sum(dx_row, dim, identity) / dim;
    for (int64_t i = 0; i < dim; ++i) {
      const T xhat = (xp[r * dim + i] - mu) * rs;
      const T d = rs * (d_row[i] - T(mean_d) - xhat * T(mean_dx));
      gx[r * dim + i] = fresh ? d : gx[r * dim + i] + d;
    }
  });
}

template <typename T>
TensorT<T> layer_norm(const TensorT<T>& x, const TensorT<T>& gamma, const TensorT<T>& beta, double eps) {
  const int64_t dim = x.size(-1);
  if ((gamma.defined() && gamma.numel() != dim) || (beta.defined() && beta.numel() != dim))
    throw ShapeError("layer_norm: affine parameters do not match the last axis of " + x.shape().str());
  TensorT<T> mean, rstd;
  TensorT<T> y = layer_norm_forward(x, gamma, beta, eps, &mean, &rstd);
  if (should_record<T>({&x, &gamma, &beta}))
    record<T>(y, "layer_norm", {&x, &gamma, &beta}, [x, gamma, beta, mean, rstd](const TensorT<T>& g) {
      layer_norm_backward(g, x, gamma, beta, mean, rstd);
    });
  return y;
}

#define INSTANTIATE(T) \
  template TensorT<T> layer_norm<T>(const TensorT<T>&, const TensorT<T>&, const TensorT<T>&, double);
LCD_FOR_EACH_SCALAR(INSTANTIATE)
}  // namespace lcd
