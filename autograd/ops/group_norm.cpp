// group_norm: x (N, C, ...) split into G groups of C/G channels; each (n, g) is normalised over its channels
// and spatial positions, then y = x̂·γ_c + β_c. Backward per group (norm_rows.h):
//   ∂γ_c = Σ g·x̂, ∂β_c = Σ g, ∂x = rstd·(d − mean(d) − x̂·mean(d ⊙ x̂)) with d = g·γ_c.
#include <vector>

#include "autograd/errors.h"
#include "autograd/op_registry.h"
#include "autograd/ops.h"
#include "autograd/ops/instantiate.h"
#include "autograd/ops/norm_rows.h"
#include "autograd/parallel.h"

namespace lcd {
LCD_DIFFERENTIABLE_OP(group_norm);

namespace {
struct GroupDims {
  int64_t n, c, spatial, groups, cpg;  // cpg: channels per group
  int64_t rows() const { return n * groups; }
  int64_t row_len() const { return cpg * spatial; }
};
}  // namespace

template <typename T>
static TensorT<T> group_norm_forward(const TensorT<T>& x, const TensorT<T>& gamma, const TensorT<T>& beta,
                                     const GroupDims& d, double eps, TensorT<T>* mean, TensorT<T>* rstd) {
  *mean = TensorT<T>::empty({d.rows()});
  *rstd = TensorT<T>::empty({d.rows()});
  row_moments(x.data(), d.rows(), d.row_len(), eps, mean->data(), rstd->data());
  auto y = TensorT<T>::empty(x.shape());
  const T* xp = x.data();
  T* yp = y.data();
  const T* mp = mean->data();
  const T* rp = rstd->data();
  const T* gp = gamma.defined() ? gamma.data() : nullptr;
  const T* bp = beta.defined() ? beta.data() : nullptr;
  parallel_for(d.n * d.c, x.numel() > 32768, [&](int64_t nc) {
    const int64_t n = nc / d.c, c = nc % d.c, row = n * d.groups + c / d.cpg;
    const T scale = rp[row] * (gp ? gp[c] : T(1));
    const T shift = (bp ? bp[c] : T(0)) - mp[row] * scale;
    const T* xs = xp + nc * d.spatial;
    T* ys = yp + nc * d.spatial;
    for (int64_t s = 0; s < d.spatial; ++s) ys[s] = xs[s] * scale + shift;
  });
  return y;
}

template <typename T>
static void group_norm_backward(const TensorT<T>& grad, const TensorT<T>& x, const TensorT<T>& gamma,
                                const TensorT<T>& beta, const TensorT<T>& mean, const TensorT<T>& rstd,
                                const GroupDims& d) {
  const T* gp = grad.data();
  const T* xp = x.data();
  const T* mp = mean.data();
  const T* rp = rstd.data();
  const T* gam = gamma.defined() ? gamma.data() : nullptr;
  // Per-(n, c) partial sums Σg·x̂ and Σg, reduced over n serially afterwards (deterministic).
  std::vector<T> sum_gx(d.n * d.c), sum_g(d.n * d.c);
  parallel_for(d.n * d.c, x.numel() > 32768, [&](int64_t nc) {
    const int64_t row = (nc / d.c) * d.groups + (nc % d.c) / d.cpg;
    const T* gs = gp + nc * d.spatial;
    const T* xs = xp + nc * d.spatial;
    T a = 0, b = 0;
    for (int64_t s = 0; s < d.spatial; ++s) {
      a += gs[s] * (xs[s] - mp[row]) * rp[row];
      b += gs[s];
    }
    sum_gx[nc] = a;
    sum_g[nc] = b;
  });
  if (needs_grad(gamma) || needs_grad(beta)) {
    T* dgam = needs_grad(gamma) ? grad_buffer(gamma) : nullptr;
    T* dbet = needs_grad(beta) ? grad_buffer(beta) : nullptr;
    for (int64_t n = 0; n < d.n; ++n)
      for (int64_t c = 0; c < d.c; ++c) {
        if (dgam) dgam[c] += sum_gx[n * d.c + c];
        if (dbet) dbet[c] += sum_g[n * d.c + c];
      }
  }
  if (!needs_grad(x)) return;
  T* gx = grad_buffer(x);
  const double inv_m = 1.0 / static_cast<double>(d.row_len());
  parallel_for(d.rows(), x.numel() > 32768, [&](int64_t row) {
    const int64_t n = row / d.groups, g0 = (row % d.groups) * d.cpg;
    // mean(d) and mean(d ⊙ x̂) over the group, with d = g·γ_c
    double md = 0, mdx = 0;
    for (int64_t c = g0; c < g0 + d.cpg; ++c) {
      const T gm = gam ? gam[c] : T(1);
      md += gm * sum_g[n * d.c + c];
      mdx += gm * sum_gx[n * d.c + c];
    }
    md *= inv_m;
    mdx *= inv_m;
    for (int64_t c = g0; c < g0 + d.cpg; ++c) {
      const T gm = gam ? gam[c] : T(1);
      const int64_t off = (n * d.c + c) * d.spatial;
      for (int64_t s = 0; s < d.spatial; ++s) {
        const T xhat = (xp[off + s] - mp[row]) * rp[row];
        gx[off + s] += rp[row] * (gp[off + s] * gm - T(md) - xhat * T(mdx));
      }
    }
  });
}

template <typename T>
TensorT<T> group_norm(const TensorT<T>& x, int groups, const TensorT<T>& gamma, const TensorT<T>& beta, double eps) {
  if (x.ndim() < 2 || groups < 1 || x.size(1) % groups != 0)
    throw ShapeError("group_norm: " + std::to_string(groups) + " groups do not divide the channels of " +
                     x.shape().str());
  const int64_t c = x.size(1);
  if ((gamma.defined() && gamma.numel() != c) || (beta.defined() && beta.numel() != c))
    throw ShapeError("group_norm: affine parameters do not have " + std::to_string(c) + " channels");
  GroupDims d{x.size(0), c, x.numel() / (x.size(0) * c), groups, c / groups};
  TensorT<T> mean, rstd;
  TensorT<T> y = group_norm_forward(x, gamma, beta, d, eps, &mean, &rstd);
  if (should_record<T>({&x, &gamma, &beta}))
    record<T>(y, "group_norm", {&x, &gamma, &beta}, [x, gamma, beta, mean, rstd, d](const TensorT<T>& g) {
      group_norm_backward(g, x, gamma, beta, mean, rstd, d);
    });
  return y;
}

#define INSTANTIATE(T) \
  template TensorT<T> group_norm<T>(const TensorT<T>&, int, const TensorT<T>&, const TensorT<T>&, double);
LCD_FOR_EACH_SCALAR(INSTANTIATE)
}  // namespace lcd
