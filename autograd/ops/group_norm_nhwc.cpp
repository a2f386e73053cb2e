// group_norm_nhwc: group normalisation of a channels-last x (N, ..., C), optionally fused with the SiLU that
// follows it in every ResnetBlock2D and in the models' output heads:
//   x̂ = (x − μ_{n,g})·rstd_{n,g} over the S pixels and C/G channels of group g,  z = x̂·γ_c + β_c,
//   y = silu(z) when fused, else z.
// One sample at a time (its S×C block stays in L1/L2): per-channel sums in double, then the group moments,
// then one pass writing y. Backward recomputes z: ∂z = g·silu'(z) (or g), ∂γ_c = Σ ∂z·x̂, ∂β_c = Σ ∂z,
// ∂x = rstd·(∂z·γ − mean_g(∂z·γ) − x̂·mean_g(∂z·γ·x̂)). Per-sample partial sums of ∂γ, ∂β are added in
// sample order, so results do not depend on the thread count.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "autograd/errors.h"
#include "autograd/op_registry.h"
#include "autograd/ops.h"
#include "autograd/ops/instantiate.h"
#include "autograd/ops/vector_math.h"
#include "autograd/parallel.h"

namespace lcd {
LCD_DIFFERENTIABLE_OP(group_norm_nhwc);

namespace {

struct Dims {
  int64_t n, s, c, groups, cpg;  // samples, pixels per sample, channels, groups, channels per group
  int64_t sample() const { return s * c; }
};

// z = x·a_c + b_c for one sample, a_c = rstd_g γ_c, b_c = β_c − μ_g a_c.
template <typename T>
void affine_of(const Dims& d, const T* mean, const T* rstd, const T* gamma, const T* beta, T* a, T* b) {
  for (int64_t c = 0; c < d.c; ++c) {
    const int64_t g = c / d.cpg;
    a[c] = rstd[g] * (gamma ? gamma[c] : T(1));
    b[c] = (beta ? beta[c] : T(0)) - mean[g] * a[c];
  }
}

// z = x·a_c + b_c, then silu(z) when fused: pixel by pixel, while the pixel's C values sit in L1.
template <typename T>
void apply_affine(const Dims& d, const T* x, const T* a, const T* b, T* z, bool fuse_silu = false) {
  for (int64_t p = 0; p < d.s; ++p) {
    const T* xp = x + p * d.c;
    T* zp = z + p * d.c;
    for (int64_t c = 0; c < d.c; ++c) zp[c] = xp[c] * a[c] + b[c];
    if (fuse_silu) vector_math::map(zp, zp, d.c, [](const auto& v) { return vector_math::silu(v); });
  }
}

template <typename T>
T* thread_buffer(int slot, int64_t n) {
  thread_local std::vector<T> buffers[3];
  if (static_cast<int64_t>(buffers[slot].size()) < n) buffers[slot].resize(n);
  return buffers[slot].data();
}

// The group moments of one sample xs (S pixels × C): per-channel Σx and Σx² in one pass, in double, each
// summed over `blocks` fixed blocks of pixels and the blocks added in order; then per group
// μ = Σx / count and σ² = Σx² / count − μ² (x² of a float is exact in double, and the difference keeps ~1e-16·μ²/σ²
// relative error, far below float's 6e-8 for any activation here), rstd = 1/√(σ² + eps). With blocks > 1 the
// blocks run on the threads (one large sample: Stable Diffusion's VAE at 512², batch 1); the result depends on
// the number of blocks, never on the thread count. blocks = 1 is the plain per-sample sum.
template <typename T>
void sample_moments(const T* xs, const Dims& d, int64_t blocks, double eps, T* mean, T* rstd) {
  const int64_t block = (d.s + blocks - 1) / blocks;
  const double count = static_cast<double>(d.s * d.cpg);
  double* part = thread_buffer<double>(0, (blocks + 1) * 2 * d.c);  // (blocks, 2, C): Σx, Σx² per block
  double* acc = part + blocks * 2 * d.c;                             // (2, C) their totals
  parallel_for(blocks, blocks > 1, [&](int64_t k) {
    double* sum = part + k * 2 * d.c;  // (C)
    double* sq = sum + d.c;            // (C)
    const int64_t p0 = k * block, p1 = std::min(d.s, (k + 1) * block);
    int64_t c0 = 0;
    // 16 channels at a time, their sums held in registers across the pixels (each channel still sums its
    // pixels in order); the last channels one at a time.
    for (; c0 + 16 <= d.c; c0 += 16) {
      double s1[16] = {}, s2[16] = {};
      for (int64_t p = p0; p < p1; ++p) {
        const T* row = xs + p * d.c + c0;
#pragma GCC unroll 16
        for (int j = 0; j < 16; ++j) {
          const double v = static_cast<double>(row[j]);
          s1[j] += v;
          s2[j] += v * v;
        }
      }
      std::copy(s1, s1 + 16, sum + c0);
      std::copy(s2, s2 + 16, sq + c0);
    }
    for (int64_t c = c0; c < d.c; ++c) {
      double s1 = 0, s2 = 0;
      for (int64_t p = p0; p < p1; ++p) {
        const double v = xs[p * d.c + c];
        s1 += v;
        s2 += v * v;
      }
      sum[c] = s1;
      sq[c] = s2;
    }
  });
  std::copy(part, part + 2 * d.c, acc);
  for (int64_t k = 1; k < blocks; ++k)
    for (int64_t c = 0; c < 2 * d.c; ++c) acc[c] += part[k * 2 * d.c + c];
  for (int64_t g = 0; g < d.groups; ++g) {
    double s1 = 0, s2 = 0;
    for (int64_t c = g * d.cpg; c < (g + 1) * d.cpg; ++c) {
      s1 += acc[c];
      s2 += acc[d.c + c];
    }
    const double mu = s1 / count, var = std::max(0.0, s2 / count - mu * mu);
    mean[g] = static_cast<T>(mu);
    rstd[g] = static_cast<T>(1.0 / std::sqrt(var + eps));
  }
}

constexpr int64_t kPixelBlocks = 32;

template <typename T>
TensorT<T> forward(const TensorT<T>& x, const TensorT<T>& gamma, const TensorT<T>& beta, const Dims& d, double eps,
                   bool fuse_silu, TensorT<T>* mean_out, TensorT<T>* rstd_out) {
  auto y = TensorT<T>::empty(x.shape());
  auto mean = TensorT<T>::empty({d.n, d.groups}), rstd = TensorT<T>::empty({d.n, d.groups});
  const T* xp = x.data();
  const T* gp = gamma.defined() ? gamma.data() : nullptr;
  const T* bp = beta.defined() ? beta.data() : nullptr;
  T* yp = y.data();
  T* mp = mean.data();
  T* rp = rstd.data();
  if (d.n == 1 && d.s >= 4 * kPixelBlocks && x.numel() > (int64_t(1) << 20) && !omp_in_parallel()) {
    // One large sample: moments and the affine pass split across the threads by blocks of pixels.
    sample_moments(xp, d, kPixelBlocks, eps, mp, rp);
    T* a = thread_buffer<T>(1, 2 * d.c);
    affine_of(d, mp, rp, gp, bp, a, a + d.c);
    const int64_t block = (d.s + kPixelBlocks - 1) / kPixelBlocks;
    parallel_for(kPixelBlocks, true, [&](int64_t k) {
      const int64_t p0 = k * block;
      if (p0 >= d.s) return;
      Dims part = d;
      part.s = std::min(d.s, p0 + block) - p0;
      apply_affine(part, xp + p0 * d.c, a, a + d.c, yp + p0 * d.c, fuse_silu);
    });
  } else {
    parallel_for<Schedule::kDynamic>(d.n, d.n > 1 && x.numel() > 32768, [&](int64_t n) {
      const T* xs = xp + n * d.sample();
      sample_moments(xs, d, 1, eps, mp + n * d.groups, rp + n * d.groups);
      T* a = thread_buffer<T>(1, 2 * d.c);
      affine_of(d, mp + n * d.groups, rp + n * d.groups, gp, bp, a, a + d.c);
      apply_affine(d, xs, a, a + d.c, yp + n * d.sample(), fuse_silu);
    });
  }
  *mean_out = mean;
  *rstd_out = rstd;
  return y;
}

template <typename T>
void backward(const TensorT<T>& grad, const TensorT<T>& x, const TensorT<T>& gamma, const TensorT<T>& beta,
              const TensorT<T>& mean, const TensorT<T>& rstd, const Dims& d, bool fuse_silu) {
  const bool want_x = needs_grad(x), want_gamma = needs_grad(gamma), want_beta = needs_grad(beta);
  const T* gy = grad.data();
  const T* xp = x.data();
  const T* gp = gamma.defined() ? gamma.data() : nullptr;
  const T* bp = beta.defined() ? beta.data() : nullptr;
  const T* mp = mean.data();
  const T* rp = rstd.data();
  bool dx_fresh = false;  // x's first gradient: written, no zero fill
  T* dx = want_x ? grad_buffer_to_write(x, &dx_fresh) : nullptr;
  std::vector<double> part_gamma(want_gamma ? d.n * d.c : 0), part_beta(want_beta ? d.n * d.c : 0);
  const double count = static_cast<double>(d.s * d.cpg);
  parallel_for<Schedule::kDynamic>(d.n, d.n > 1 && x.numel() > 32768, [&](int64_t n) {
    const T* xs = xp + n * d.sample();
    const T* gs = gy + n * d.sample();
    const T* mean_n = mp + n * d.groups;
    const T* rstd_n = rp + n * d.groups;
    // ∂z for this sample
    T* dz = thread_buffer<T>(0, d.sample());
    if (fuse_silu) {
      T* a = thread_buffer<T>(1, 2 * d.c);
      affine_of(d, mean_n, rstd_n, gp, bp, a, a + d.c);
      apply_affine(d, xs, a, a + d.c, dz);
      vector_math::map2(gs, dz, dz, d.sample(), [](const auto& g, const auto& z) {
        return g * vector_math::silu_grad(z);
      });
    } else {
      std::copy(gs, gs + d.sample(), dz);
    }
    // Σ_pixels ∂z and Σ_pixels ∂z·x̂ per channel
    double* sums = thread_buffer<double>(2, 4 * d.c);
    double* sdz = sums;
    double* sdzx = sums + d.c;
    double* mean_c = sums + 2 * d.c;  // each channel's group mean and rstd, so that the loop below vectorises
    double* rstd_c = sums + 3 * d.c;
    std::fill(sums, sums + 2 * d.c, 0.0);
    for (int64_t c = 0; c < d.c; ++c) {
      mean_c[c] = mean_n[c / d.cpg];
      rstd_c[c] = rstd_n[c / d.cpg];
    }
    for (int64_t p = 0; p < d.s; ++p)
      for (int64_t c = 0; c < d.c; ++c) {
        const double xhat = (double(xs[p * d.c + c]) - mean_c[c]) * rstd_c[c];
        sdz[c] += dz[p * d.c + c];
        sdzx[c] += dz[p * d.c + c] * xhat;
      }
    if (want_gamma) std::copy(sdzx, sdzx + d.c, part_gamma.begin() + n * d.c);
    if (want_beta) std::copy(sdz, sdz + d.c, part_beta.begin() + n * d.c);
    if (!want_x) return;
    T* k = thread_buffer<T>(1, 3 * d.c);  // per channel: rstd·γ, rstd·mean_g(∂z·γ), rstd·mean_g(∂z·γ·x̂)·rstd
    for (int64_t g = 0; g < d.groups; ++g) {
      double md = 0, mdx = 0;
      for (int64_t c = g * d.cpg; c < (g + 1) * d.cpg; ++c) {
        const double gm = gp ? gp[c] : 1.0;
        md += gm * sdz[c];
        mdx += gm * sdzx[c];
      }
      md /= count;
      mdx /= count;
      for (int64_t c = g * d.cpg; c < (g + 1) * d.cpg; ++c) {
        k[c] = static_cast<T>(rstd_n[g] * (gp ? gp[c] : 1.0));
        k[d.c + c] = static_cast<T>(rstd_n[g] * (md - mean_n[g] * rstd_n[g] * mdx));
        k[2 * d.c + c] = static_cast<T>(rstd_n[g] * rstd_n[g] * mdx);
      }
    }
    // ∂x = rstd·(∂z·γ − md − x̂·mdx) = ∂z·k0 − k1 − x·k2, with x̂ = (x − μ)·rstd folded into k1
    T* dxs = dx + n * d.sample();
    for (int64_t p = 0; p < d.s; ++p)
      for (int64_t c = 0; c < d.c; ++c) {
        const T v = dz[p * d.c + c] * k[c] - k[d.c + c] - xs[p * d.c + c] * k[2 * d.c + c];
        dxs[p * d.c + c] = dx_fresh ? v : dxs[p * d.c + c] + v;
      }
  });
  auto reduce = [&](const std::vector<double>& part, const TensorT<T>& param) {
    T* dst = grad_buffer(param);
    for (int64_t c = 0; c < d.c; ++c) {
      double s = 0;
      for (int64_t n = 0; n < d.n; ++n) s += part[n * d.c + c];
      dst[c] += static_cast<T>(s);
    }
  };
  if (want_gamma) reduce(part_gamma, gamma);
  if (want_beta) reduce(part_beta, beta);
}

}  // namespace

template <typename T>
TensorT<T> group_norm_nhwc(const TensorT<T>& x, int groups, const TensorT<T>& gamma, const TensorT<T>& beta,
                           double eps, bool fuse_silu) {
  if (x.ndim() < 2 || groups < 1 || x.size(-1) % groups != 0)
    throw ShapeError("group_norm_nhwc: " + std::to_string(groups) + " groups do not divide the channels (last axis) of " +
                     x.shape().str());
  const int64_t c = x.size(-1);
  if ((gamma.defined() && gamma.numel() != c) || (beta.defined() && beta.numel() != c))
    throw ShapeError("group_norm_nhwc: affine parameters do not have " + std::to_string(c) + " channels");
  const Dims d{x.size(0), x.numel() / (x.size(0) * c), c, groups, c / groups};
  TensorT<T> mean, rstd;
  TensorT<T> y = forward(x, gamma, beta, d, eps, fuse_silu, &mean, &rstd);
  if (should_record<T>({&x, &gamma, &beta}))
    record<T>(y, "group_norm_nhwc", {&x, &gamma, &beta}, [x, gamma, beta, mean, rstd, d, fuse_silu](const TensorT<T>& g) {
      backward(g, x, gamma, beta, mean, rstd, d, fuse_silu);
    });
  return y;
}

#define INSTANTIATE(T)                                                                                   \
  template TensorT<T> group_norm_nhwc<T>(const TensorT<T>&, int, const TensorT<T>&, const TensorT<T>&, double, \
                                         bool);
LCD_FOR_EACH_SCALAR(INSTANTIATE)
}  // namespace lcd
