// attention: multi-head scaled-dot-product attention with heads split from the channel axis (diffusers'
// head_to_batch_dim). For each batch b and head h with d = C/heads channels:
//   S = scale · Q_h K_hᵀ (Lq, Lk),  P = softmax_rows(S),  O_h = P V_h.
// Backward: ∂V_h = Pᵀ G_h, ∂P = G_h V_hᵀ, ∂S = P ⊙ (∂P − rowsum(∂P ⊙ P)), ∂Q_h = scale ∂S K_h,
// ∂K_h = scale ∂Sᵀ Q_h. P is saved (B·heads·Lq·Lk values); Q, K, V are kept by reference.
// Float runs a fused packet kernel forward (below); double keeps the plain Eigen form as the reference.
#include <cmath>
#include <limits>
#include <vector>

#include "autograd/errors.h"
#include "autograd/flop_counter.h"
#include "autograd/op_registry.h"
#include "autograd/ops.h"
#include "autograd/ops/instantiate.h"
#include "autograd/ops/kernels.h"
#include "autograd/ops/vector_math.h"

namespace lcd {
LCD_DIFFERENTIABLE_OP(attention);

namespace {
// A head's (L, d) slice of a (B, L, C) tensor: rows strided by C.
template <typename T>
using HeadMap = Eigen::Map<Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>, Eigen::Unaligned,
                           Eigen::OuterStride<>>;
template <typename T>
using ConstHeadMap = Eigen::Map<const Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>,
                                Eigen::Unaligned, Eigen::OuterStride<>>;

struct AttentionDims {
  int64_t batch, lq, lk, c, cv, heads, d, dv;
  double scale;
};
}  // namespace

// The reference forward (double): Eigen products per (b, h) and softmax_rows.
template <typename T>
static TensorT<T> attention_forward(const TensorT<T>& q, const TensorT<T>& k, const TensorT<T>& v,
                                    const AttentionDims& a, TensorT<T>* probs_out) {
  auto out = TensorT<T>::empty({a.batch, a.lq, a.cv});
  FlopCounter::add(2 * a.batch * a.heads * a.lq * a.lk * (a.d + a.dv));
  // P is kept only for backward; without a tape each (b, h) uses a per-thread scratch matrix instead.
  TensorT<T> probs = probs_out ? TensorT<T>::empty({a.batch, a.heads, a.lq, a.lk}) : TensorT<T>();
  const T* qp = q.data();
  const T* kp = k.data();
  const T* vp = v.data();
  T* op = out.data();
  T* pp = probs_out ? probs.data() : nullptr;
  const T scale = static_cast<T>(a.scale);
#pragma omp parallel if (a.batch * a.heads > 1)
  {
  std::vector<T, Eigen::aligned_allocator<T>> scratch(pp ? 0 : a.lq * a.lk);
#pragma omp for schedule(static)
  for (int64_t bh = 0; bh < a.batch * a.heads; ++bh) {
    const int64_t b = bh / a.heads, h = bh % a.heads;
    ConstHeadMap<T> qh(qp + b * a.lq * a.c + h * a.d, a.lq, a.d, Eigen::OuterStride<>(a.c));
    ConstHeadMap<T> kh(kp + b * a.lk * a.c + h * a.d, a.lk, a.d, Eigen::OuterStride<>(a.c));
    ConstHeadMap<T> vh(vp + b * a.lk * a.cv + h * a.dv, a.lk, a.dv, Eigen::OuterStride<>(a.cv));
    T* p = pp ? pp + bh * a.lq * a.lk : scratch.data();
    MatrixMap<T> pm(p, a.lq, a.lk);
    pm.noalias() = scale * (qh * kh.transpose());
    softmax_rows(p, p, a.lq, a.lk);
    HeadMap<T>(op + b * a.lq * a.cv + h * a.dv, a.lq, a.dv, Eigen::OuterStride<>(a.cv)).noalias() = pm * vh;
  }
  }
  if (probs_out) *probs_out = probs;
  return out;
}

// The float forward: one fused pass per (b, h), vectorised across queries: a packet holds the same key's
// score for `lanes` consecutive queries, so the softmax over keys is plain packet arithmetic (max, exp, sum)
// with no horizontal reduction, and the small head sizes of these models (d = 8 channels, 4 context tokens)
// still fill every lane. Qᵀ of each block of queries is gathered once (zero-padded to whole packets), the
// block's scores stay in an L1 buffer, and P leaves it only when backward needs it. Every element follows
// the same arithmetic in a fixed order, so results do not depend on where buffers sit.
template <>
TensorT<float> attention_forward<float>(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionDims& a,
                                        Tensor* probs_out) {
  namespace ei = Eigen::internal;
  using P = vector_math::FloatPacket;
  constexpr int64_t lanes = vector_math::kLanes;
  auto out = Tensor::empty({a.batch, a.lq, a.cv});
  FlopCounter::add(2 * a.batch * a.heads * a.lq * a.lk * (a.d + a.dv));
  const int64_t blocks = (a.lq + lanes - 1) / lanes;
  // P for backward in the kernel's own layout: per (b, h) and block of queries, (Lk, lanes).
  Tensor probs = probs_out ? Tensor::empty({a.batch * a.heads, blocks, a.lk, lanes}) : Tensor();
  const float* qp = q.data();
  const float* kp = k.data();
  const float* vp = v.data();
  float* op = out.data();
  float* pp = probs_out ? probs.data() : nullptr;
  const float scale = static_cast<float>(a.scale);
#pragma omp parallel if (a.batch * a.heads * blocks > 1)
  {
    // Qᵀ (d, lanes), scores then probabilities (Lk, lanes), Oᵀ (dv, lanes)
    std::vector<float, Eigen::aligned_allocator<float>> qt(a.d * lanes), sc(a.lk * lanes), ot(a.dv * lanes);
#pragma omp for schedule(dynamic, 4)
    for (int64_t task = 0; task < a.batch * a.heads * blocks; ++task) {
      const int64_t bh = task / blocks, i0 = (task % blocks) * lanes, rows = std::min(lanes, a.lq - i0);
      const int64_t b = bh / a.heads, h = bh % a.heads;
      const float* kh = kp + b * a.lk * a.c + h * a.d;    // (Lk, d), row stride C
      const float* vh = vp + b * a.lk * a.cv + h * a.dv;  // (Lk, dv), row stride Cv
      std::fill(qt.begin(), qt.end(), 0.0f);
      for (int64_t r = 0; r < rows; ++r) {
        const float* qi = qp + (b * a.lq + i0 + r) * a.c + h * a.d;
        for (int64_t c = 0; c < a.d; ++c) qt[c * lanes + r] = qi[c] * scale;
      }
      // S_j = scale · Q Kⱼᵀ for the block's queries, four keys at a time (independent FMA chains), and the
      // running max over keys
      P m = ei::pset1<P>(-std::numeric_limits<float>::infinity());
      int64_t j = 0;
      for (; j + 4 <= a.lk; j += 4) {
        P acc[4] = {ei::pset1<P>(0.0f), ei::pset1<P>(0.0f), ei::pset1<P>(0.0f), ei::pset1<P>(0.0f)};
        for (int64_t c = 0; c < a.d; ++c) {
          const P qc = ei::pload<P>(qt.data() + c * lanes);
          for (int u = 0; u < 4; ++u) acc[u] = ei::pmadd(qc, ei::pset1<P>(kh[(j + u) * a.c + c]), acc[u]);
        }
        for (int u = 0; u < 4; ++u) {
          ei::pstore(sc.data() + (j + u) * lanes, acc[u]);
          m = ei::pmax(m, acc[u]);
        }
      }
      for (; j < a.lk; ++j) {
        P acc = ei::pset1<P>(0.0f);
        for (int64_t c = 0; c < a.d; ++c) acc = ei::pmadd(ei::pload<P>(qt.data() + c * lanes), ei::pset1<P>(kh[j * a.c + c]), acc);
        ei::pstore(sc.data() + j * lanes, acc);
        m = ei::pmax(m, acc);
      }
      // P_j = exp(S_j − max) / Σ_j exp(S_j − max)
      P total = ei::pset1<P>(0.0f);
      for (int64_t j = 0; j < a.lk; ++j) {
        const P e = ei::pexp(ei::psub(ei::pload<P>(sc.data() + j * lanes), m));
        ei::pstore(sc.data() + j * lanes, e);
        total = ei::padd(total, e);
      }
      const P inv = ei::pdiv(ei::pset1<P>(1.0f), total);
      for (int64_t j = 0; j < a.lk; ++j) ei::pstore(sc.data() + j * lanes, ei::pmul(ei::pload<P>(sc.data() + j * lanes), inv));
      if (pp) std::copy(sc.begin(), sc.end(), pp + (bh * blocks + i0 / lanes) * a.lk * lanes);
      // Oᵀ_c = Σ_j P_j V[j, c], eight channels at a time (independent FMA chains)
      for (int64_t c0 = 0; c0 < a.dv; c0 += 8) {
        const int64_t width = std::min<int64_t>(8, a.dv - c0);
        P acc[8];
        for (int u = 0; u < 8; ++u) acc[u] = ei::pset1<P>(0.0f);
        for (int64_t jj = 0; jj < a.lk; ++jj) {
          const P pj = ei::pload<P>(sc.data() + jj * lanes);
          const float* vj = vh + jj * a.cv + c0;
          if (width == 8)
            for (int u = 0; u < 8; ++u) acc[u] = ei::pmadd(pj, ei::pset1<P>(vj[u]), acc[u]);
          else
            for (int u = 0; u < width; ++u) acc[u] = ei::pmadd(pj, ei::pset1<P>(vj[u]), acc[u]);
        }
        for (int u = 0; u < width; ++u) ei::pstore(ot.data() + (c0 + u) * lanes, acc[u]);
      }
      for (int64_t r = 0; r < rows; ++r) {
        float* oi = op + (b * a.lq + i0 + r) * a.cv + h * a.dv;
        for (int64_t c = 0; c < a.dv; ++c) oi[c] = ot[c * lanes + r];
      }
    }
  }
  if (probs_out) *probs_out = probs;
  return out;
}

// The reference backward (double): Eigen products per (b, h), P saved as (B, heads, Lq, Lk).
template <typename T>
static void attention_backward(const TensorT<T>& grad, const TensorT<T>& q, const TensorT<T>& k,
                               const TensorT<T>& v, const TensorT<T>& probs, const AttentionDims& a) {
  const T* gp = grad.data();
  const T* qp = q.data();
  const T* kp = k.data();
  const T* vp = v.data();
  const T* pp = probs.data();
  T* gq = needs_grad(q) ? grad_buffer(q) : nullptr;
  T* gk = needs_grad(k) ? grad_buffer(k) : nullptr;
  T* gv = needs_grad(v) ? grad_buffer(v) : nullptr;
  const T scale = static_cast<T>(a.scale);
#pragma omp parallel for schedule(static) if (a.batch * a.heads > 1)
  for (int64_t bh = 0; bh < a.batch * a.heads; ++bh) {
    const int64_t b = bh / a.heads, h = bh % a.heads;
    const Eigen::OuterStride<> sc(a.c), scv(a.cv);
    ConstHeadMap<T> gh(gp + b * a.lq * a.cv + h * a.dv, a.lq, a.dv, scv);
    ConstMatrixMap<T> pm(pp + bh * a.lq * a.lk, a.lq, a.lk);
    if (gv) HeadMap<T>(gv + b * a.lk * a.cv + h * a.dv, a.lk, a.dv, scv).noalias() += pm.transpose() * gh;
    if (!gq && !gk) continue;
    ConstHeadMap<T> vh(vp + b * a.lk * a.cv + h * a.dv, a.lk, a.dv, scv);
    Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> ds = gh * vh.transpose();  // ∂P
    for (int64_t i = 0; i < a.lq; ++i) {
      const T dot = ds.row(i).dot(pm.row(i));
      ds.row(i) = pm.row(i).cwiseProduct((ds.row(i).array() - dot).matrix());
    }
    if (gq) {
      ConstHeadMap<T> kh(kp + b * a.lk * a.c + h * a.d, a.lk, a.d, sc);
      HeadMap<T>(gq + b * a.lq * a.c + h * a.d, a.lq, a.d, sc).noalias() += scale * (ds * kh);
    }
    if (gk) {
      ConstHeadMap<T> qh(qp + b * a.lq * a.c + h * a.d, a.lq, a.d, sc);
      HeadMap<T>(gk + b * a.lk * a.c + h * a.d, a.lk, a.d, sc).noalias() += scale * (ds.transpose() * qh);
    }
  }
}

// The float backward, in the forward kernel's orientation (a packet = one key for `lanes` queries) and from
// its saved P blocks. Per (b, h): Gᵀ and Qᵀ of every block of queries are gathered once; per block
// ∂P_j = G Vⱼᵀ, r = Σ_j ∂P_j ⊙ P_j, ∂S_j = P_j ⊙ (∂P_j − r) and ∂Qᵀ = scale Σ_j ∂S_j Kⱼ; then ∂V[j, c] =
// Σ_blocks P_j·Gᵀ_c and ∂K[j, c] = scale Σ_blocks ∂S_j·Qᵀ_c, sums over all queries, accumulate in registers
// across the blocks and are reduced across lanes once. Padded query lanes have zero gradients and add nothing.
template <>
void attention_backward<float>(const Tensor& grad, const Tensor& q, const Tensor& k, const Tensor& v,
                               const Tensor& probs, const AttentionDims& a) {
  namespace ei = Eigen::internal;
  using P = vector_math::FloatPacket;
  constexpr int64_t lanes = vector_math::kLanes;
  const int64_t blocks = (a.lq + lanes - 1) / lanes;
  const float* gp = grad.data();
  const float* qp = q.data();
  const float* kp = k.data();
  const float* vp = v.data();
  const float* pp = probs.data();
  float* gq = needs_grad(q) ? grad_buffer(q) : nullptr;
  float* gk = needs_grad(k) ? grad_buffer(k) : nullptr;
  float* gv = needs_grad(v) ? grad_buffer(v) : nullptr;
  const float scale = static_cast<float>(a.scale);
  FlopCounter::add(2 * a.batch * a.heads * a.lq * a.lk * (2 * a.dv + (gq ? a.d : 0) + (gk ? a.d : 0)));
#pragma omp parallel if (a.batch * a.heads > 1)
  {
    // per block: Gᵀ (dv, lanes), Qᵀ (d, lanes), ∂S (Lk, lanes); one block's ∂Qᵀ (d, lanes)
    std::vector<float, Eigen::aligned_allocator<float>> gt(blocks * a.dv * lanes), qt(blocks * a.d * lanes),
        ds(blocks * a.lk * lanes), dqt(a.d * lanes);
#pragma omp for schedule(dynamic, 2)
    for (int64_t bh = 0; bh < a.batch * a.heads; ++bh) {
      const int64_t b = bh / a.heads, h = bh % a.heads;
      const float* kh = kp + b * a.lk * a.c + h * a.d;
      const float* vh = vp + b * a.lk * a.cv + h * a.dv;
      const float* pbh = pp + bh * blocks * a.lk * lanes;  // P_j packets of every block
      std::fill(gt.begin(), gt.end(), 0.0f);
      std::fill(qt.begin(), qt.end(), 0.0f);
      for (int64_t i = 0; i < a.lq; ++i) {
        const int64_t blk = i / lanes, r = i % lanes;
        const float* gi = gp + (b * a.lq + i) * a.cv + h * a.dv;
        const float* qi = qp + (b * a.lq + i) * a.c + h * a.d;
        for (int64_t c = 0; c < a.dv; ++c) gt[(blk * a.dv + c) * lanes + r] = gi[c];
        for (int64_t c = 0; c < a.d; ++c) qt[(blk * a.d + c) * lanes + r] = qi[c];
      }
      // ∂V[j, c] = Σ_i P[i, j] G[i, c]
      if (gv)
        for (int64_t j = 0; j < a.lk; ++j)
          for (int64_t c = 0; c < a.dv; ++c) {
            P acc = ei::pset1<P>(0.0f);
            for (int64_t blk = 0; blk < blocks; ++blk)
              acc = ei::pmadd(ei::pload<P>(pbh + (blk * a.lk + j) * lanes), ei::pload<P>(gt.data() + (blk * a.dv + c) * lanes), acc);
            gv[(b * a.lk + j) * a.cv + h * a.dv + c] += ei::predux(acc);
          }
      if (!gq && !gk) continue;
      for (int64_t blk = 0; blk < blocks; ++blk) {
        const float* pb = pbh + blk * a.lk * lanes;
        const float* gtb = gt.data() + blk * a.dv * lanes;
        float* dsb = ds.data() + blk * a.lk * lanes;
        // ∂P_j = Σ_c Gᵀ_c V[j, c], and r = Σ_j ∂P_j ⊙ P_j
        P r_sum = ei::pset1<P>(0.0f);
        for (int64_t j = 0; j < a.lk; ++j) {
          P dp[4] = {ei::pset1<P>(0.0f), ei::pset1<P>(0.0f), ei::pset1<P>(0.0f), ei::pset1<P>(0.0f)};
          for (int64_t c = 0; c < a.dv; ++c) dp[c & 3] = ei::pmadd(ei::pload<P>(gtb + c * lanes), ei::pset1<P>(vh[j * a.cv + c]), dp[c & 3]);
          const P dpj = ei::padd(ei::padd(dp[0], dp[1]), ei::padd(dp[2], dp[3]));
          ei::pstore(dsb + j * lanes, dpj);
          r_sum = ei::pmadd(dpj, ei::pload<P>(pb + j * lanes), r_sum);
        }
        // ∂S_j = P_j ⊙ (∂P_j − r)
        for (int64_t j = 0; j < a.lk; ++j)
          ei::pstore(dsb + j * lanes, ei::pmul(ei::pload<P>(pb + j * lanes), ei::psub(ei::pload<P>(dsb + j * lanes), r_sum)));
        if (!gq) continue;
        // ∂Qᵀ_c = scale Σ_j ∂S_j K[j, c], eight channels at a time
        for (int64_t c0 = 0; c0 < a.d; c0 += 8) {
          const int64_t width = std::min<int64_t>(8, a.d - c0);
          P acc[8];
          for (int u = 0; u < 8; ++u) acc[u] = ei::pset1<P>(0.0f);
          for (int64_t j = 0; j < a.lk; ++j) {
            const P dsj = ei::pload<P>(dsb + j * lanes);
            for (int u = 0; u < width; ++u) acc[u] = ei::pmadd(dsj, ei::pset1<P>(kh[j * a.c + c0 + u]), acc[u]);
          }
          for (int u = 0; u < width; ++u) ei::pstore(dqt.data() + (c0 + u) * lanes, acc[u]);
        }
        const int64_t rows = std::min(lanes, a.lq - blk * lanes);
        for (int64_t r = 0; r < rows; ++r) {
          float* gqi = gq + (b * a.lq + blk * lanes + r) * a.c + h * a.d;
          for (int64_t c = 0; c < a.d; ++c) gqi[c] += scale * dqt[c * lanes + r];
        }
      }
      // ∂K[j, c] = scale Σ_i ∂S[i, j] Q[i, c]
      if (gk)
        for (int64_t j = 0; j < a.lk; ++j)
          for (int64_t c = 0; c < a.d; ++c) {
            P acc = ei::pset1<P>(0.0f);
            for (int64_t blk = 0; blk < blocks; ++blk)
              acc = ei::pmadd(ei::pload<P>(ds.data() + (blk * a.lk + j) * lanes), ei::pload<P>(qt.data() + (blk * a.d + c) * lanes), acc);
            gk[(b * a.lk + j) * a.c + h * a.d + c] += scale * ei::predux(acc);
          }
    }
  }
}

template <typename T>
TensorT<T> attention(const TensorT<T>& q, const TensorT<T>& k, const TensorT<T>& v, int heads, double scale) {
  if (q.ndim() != 3 || k.ndim() != 3 || v.ndim() != 3 || q.size(0) != k.size(0) || k.size(0) != v.size(0) ||
      q.size(2) != k.size(2) || k.size(1) != v.size(1))
    throw ShapeError("attention: q " + q.shape().str() + ", k " + k.shape().str() + ", v " + v.shape().str() +
                     " do not fit (B,Lq,C), (B,Lk,C), (B,Lk,Cv)");
  if (heads < 1 || q.size(2) % heads != 0 || v.size(2) % heads != 0)
    throw ShapeError("attention: " + std::to_string(heads) + " heads do not divide channels of q " +
                     q.shape().str() + " and v " + v.shape().str());
  AttentionDims a{q.size(0), q.size(1), k.size(1), q.size(2), v.size(2), heads, q.size(2) / heads,
                  v.size(2) / heads, scale};
  if (a.scale == 0.0) a.scale = 1.0 / std::sqrt(static_cast<double>(a.d));
  const bool recording = should_record<T>({&q, &k, &v});
  TensorT<T> probs;
  TensorT<T> y = attention_forward(q, k, v, a, recording ? &probs : nullptr);
  if (recording)
    record<T>(y, "attention", {&q, &k, &v},
              [q, k, v, probs, a](const TensorT<T>& g) { attention_backward(g, q, k, v, probs, a); });
  return y;
}

#define INSTANTIATE(T) \
  template TensorT<T> attention<T>(const TensorT<T>&, const TensorT<T>&, const TensorT<T>&, int, double);
LCD_FOR_EACH_SCALAR(INSTANTIATE)
}  // namespace lcd
