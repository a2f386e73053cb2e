// attention: multi-head scaled-dot-product attention with heads split from the channel axis (diffusers'
// head_to_batch_dim). For each batch b and head h with d = C/heads channels:
//   S = scale · Q_h K_hᵀ (Lq, Lk),  P = softmax_rows(S),  O_h = P V_h.
// Backward: ∂V_h = Pᵀ G_h, ∂P = G_h V_hᵀ, ∂S = P ⊙ (∂P − rowsum(∂P ⊙ P)), ∂Q_h = scale ∂S K_h,
// ∂K_h = scale ∂Sᵀ Q_h. P is saved (B·heads·Lq·Lk values); Q, K, V are kept by reference.
// Float runs a fused packet kernel forward (below); double keeps the plain Eigen form as the reference.
#include <cmath>
#include <limits>
#include <memory>
#include <tuple>
#include <vector>

#include "autograd/cpu/bf16.h"
#include "autograd/cpu/matmul.h"
#include "autograd/cpu/precision.h"
#include "autograd/errors.h"
#include "autograd/flop_counter.h"
#include "autograd/op_registry.h"
#include "autograd/ops.h"
#include "autograd/ops/instantiate.h"
#include "autograd/ops/kernels.h"
#include "autograd/ops/vector_math.h"
#include "autograd/parallel.h"

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

// The float kernels' block layout: a packet holds one value for `lanes` consecutive queries.
namespace ei = Eigen::internal;
using FloatBuffer = std::vector<float, Eigen::aligned_allocator<float>>;  // per-thread scratch
using Packet = vector_math::FloatPacket;
constexpr int64_t kLanes = vector_math::kLanes;

// dst (n, lanes) = f · the block's rows (rows ≤ lanes of n values, row stride ld) transposed; lanes past the
// last row are zero. Whole blocks of lanes × lanes go through registers (one packet transpose each).
void gather_block(const float* src, int64_t ld, int64_t rows, int64_t n, float f, float* dst) {
  const Packet fp = ei::pset1<Packet>(f);
  int64_t c0 = 0;
  if (rows == kLanes)
    for (; c0 + kLanes <= n; c0 += kLanes) {
      ei::PacketBlock<Packet, kLanes> t;
      for (int64_t r = 0; r < kLanes; ++r) t.packet[r] = ei::ploadu<Packet>(src + r * ld + c0);
      ei::ptranspose(t);
      for (int64_t c = 0; c < kLanes; ++c) ei::pstore(dst + (c0 + c) * kLanes, ei::pmul(t.packet[c], fp));
    }
  std::fill(dst + c0 * kLanes, dst + n * kLanes, 0.0f);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = c0; c < n; ++c) dst[c * kLanes + r] = src[r * ld + c] * f;
}

// One group of w ≤ lanes columns of scatter_block: the rows (row stride ld) = f · src (w, lanes) transposed, or
// += f · it, through one packet transpose (zero columns added when w < lanes). A narrow last group (∂V and ∂K
// rows of 8-channel heads) is written by masked stores; its strided scalar loop had been a fifth of an attention
// backward at 8 channels a head (AMD EPYC Zen 5). False, nothing done, for a narrow group where the packet type
// has no masked stores (portable builds): the caller's scalar loop writes it.
template <typename P>
bool scatter_group(const float* src, int64_t w, float* dst, int64_t ld, bool accumulate, float f) {
  constexpr bool masked = ei::unpacket_traits<P>::masked_store_available;
  if (!masked && w < kLanes) return false;
  const P fp = ei::pset1<P>(f);
  ei::PacketBlock<P, kLanes> t;
  for (int64_t c = 0; c < kLanes; ++c) t.packet[c] = c < w ? ei::pload<P>(src + c * kLanes) : ei::pset1<P>(0.0f);
  ei::ptranspose(t);
  for (int64_t r = 0; r < kLanes; ++r) {
    float* row = dst + r * ld;
    if (w == kLanes) {
      ei::pstoreu(row, accumulate ? ei::pmadd(fp, t.packet[r], ei::ploadu<P>(row)) : ei::pmul(fp, t.packet[r]));
    } else if constexpr (masked) {
      const auto mask = static_cast<typename ei::unpacket_traits<P>::mask_t>((1u << w) - 1);  // w values a row
      ei::pstoreu(row, accumulate ? ei::pmadd(fp, t.packet[r], ei::ploadu<P>(row, mask)) : ei::pmul(fp, t.packet[r]), mask);
    }
  }
  return true;
}

// The block's rows (row stride ld) = f · src (n, lanes) transposed, or += f · it when accumulating.
void scatter_block(const float* src, int64_t n, int64_t rows, float* dst, int64_t ld, bool accumulate, float f) {
  int64_t c0 = 0;
  if (rows == kLanes)
    for (; c0 < n; c0 += kLanes)
      if (!scatter_group<Packet>(src + c0 * kLanes, std::min(kLanes, n - c0), dst + c0, ld, accumulate, f)) break;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = c0; c < n; ++c)
      dst[r * ld + c] = accumulate ? dst[r * ld + c] + f * src[c * kLanes + r] : f * src[c * kLanes + r];
}

// out_u = Σ_j w_j · x[j·step + u·stride] for u < W, with w a run of n packets: W FMA chains held in
// registers. With (step, stride) = (ld, 1) a block of columns of a row-major x (O = P V, ∂Q = ∂S K); with
// (1, ld) its transpose (the scores Q Kᵀ of W keys).
template <int W>
inline void packet_products(const float* w, int64_t n, const float* x, int64_t step, int64_t stride, float* out) {
  Packet acc[W];
  for (int u = 0; u < W; ++u) acc[u] = ei::pset1<Packet>(0.0f);
  for (int64_t j = 0; j < n; ++j) {
    const Packet wj = ei::pload<Packet>(w + j * kLanes);
    for (int u = 0; u < W; ++u) acc[u] = ei::pmadd(wj, ei::pset1<Packet>(x[j * step + u * stride]), acc[u]);
  }
  for (int u = 0; u < W; ++u) ei::pstore(out + u * kLanes, acc[u]);
}

// s_u = Σ_c qt_c · k[u, c] for U keys (k row stride ld), stored at s + u·lanes; returns their lane-wise max.
template <int U>
inline Packet block_scores(const float* qt, int64_t d, const float* k, int64_t ld, float* s) {
  packet_products<U>(qt, d, k, 1, ld, s);
  Packet m = ei::pload<Packet>(s);
  for (int u = 1; u < U; ++u) m = ei::pmax(m, ei::pload<Packet>(s + u * kLanes));
  return m;
}

// out (width, lanes) = Σ_j w_j ⊗ x[j, :] (O = P V forward, ∂Q = ∂S K backward), eight columns at a time.
void weighted_sum(const float* w, int64_t lk, const float* x, int64_t ld, int64_t width, float* out) {
  int64_t c = 0;
  for (; c + 8 <= width; c += 8) packet_products<8>(w, lk, x + c, ld, 1, out + c * kLanes);
  for (; c + 4 <= width; c += 4) packet_products<4>(w, lk, x + c, ld, 1, out + c * kLanes);
  for (; c < width; ++c) packet_products<1>(w, lk, x + c, ld, 1, out + c * kLanes);
}

// For the keys j0 .. j0 + lanes − 1 and every column c < width: f · Σ_i a[i, j] x[i, c] over the lq queries, added
// into (or written to, when `fresh`) dst[j, c] (row stride ld): ∂V = Pᵀ G and ∂K = scale ∂Sᵀ Q backward. a holds
// the blocks' packets (a_j of block blk at a + (blk·lk + j)·lanes, a packet = lanes queries); x is row-major
// (row stride ldx). Each block's lanes × lanes tile of a is transposed once into at (lq, lanes: a packet = the
// group's keys), then weighted_sum's FMA chains run over the queries with x[i, c] broadcast: no reduction across
// lanes, and one transpose per block for all `width` columns. Padded queries past lq are never read.
void key_group_sums(const float* a, int64_t lk, int64_t j0, int64_t blocks, int64_t lq, const float* x, int64_t ldx,
                    int64_t width, float f, float* at, float* out, float* dst, int64_t ld, bool fresh) {
  for (int64_t blk = 0; blk < blocks; ++blk)
    gather_block(a + (blk * lk + j0) * kLanes, kLanes, kLanes, kLanes, 1.0f, at + blk * kLanes * kLanes);
  weighted_sum(at, lq, x, ldx, width, out);  // (width, lanes)
  scatter_block(out, width, kLanes, dst, ld, !fresh, f);
}
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
  // Per thread: the scores of one (b, h) when P is not kept (Lq, Lk)
  using Scratch = std::vector<T, Eigen::aligned_allocator<T>>;
  auto scratch_of = [&] { return Scratch(pp ? 0 : a.lq * a.lk); };
  parallel_for_with(a.batch * a.heads, a.batch * a.heads > 1, scratch_of, [&](Scratch& scratch, int64_t bh) {
    const int64_t b = bh / a.heads, h = bh % a.heads;
    ConstHeadMap<T> qh(qp + b * a.lq * a.c + h * a.d, a.lq, a.d, Eigen::OuterStride<>(a.c));
    ConstHeadMap<T> kh(kp + b * a.lk * a.c + h * a.d, a.lk, a.d, Eigen::OuterStride<>(a.c));
    ConstHeadMap<T> vh(vp + b * a.lk * a.cv + h * a.dv, a.lk, a.dv, Eigen::OuterStride<>(a.cv));
    T* p = pp ? pp + bh * a.lq * a.lk : scratch.data();
    MatrixMap<T> pm(p, a.lq, a.lk);
    pm.noalias() = scale * (qh * kh.transpose());
    softmax_rows(p, p, a.lq, a.lk);
    HeadMap<T>(op + b * a.lq * a.cv + h * a.dv, a.lq, a.dv, Eigen::OuterStride<>(a.cv)).noalias() = pm * vh;
  });
  if (probs_out) *probs_out = probs;
  return out;
}

namespace {
// The unnormalised softmax of each row of scale·S (rows × n): p_j = exp(scale·(s_j − max_j s)), in place in s
// and, when p16 is given, rounded into it (bf16); 1 / Σ_j p_j per row into inv_sum. The caller divides the
// product P·V by the sum instead of dividing every p_j.
void exp_rows(float* s, cpu::bf16* p16, float* inv_sum, int64_t rows, int64_t n, float scale) {
  const Packet ps = ei::pset1<Packet>(scale);
  for (int64_t r = 0; r < rows; ++r) {
    float* row = s + r * n;
    int64_t j = 0;
    Packet pm = ei::pset1<Packet>(-std::numeric_limits<float>::infinity());
    for (; j + kLanes <= n; j += kLanes) pm = ei::pmax(pm, ei::ploadu<Packet>(row + j));
    float m = ei::predux_max(pm);
    for (; j < n; ++j) m = std::max(m, row[j]);
    const Packet shift = ei::pset1<Packet>(scale * m);
    Packet total = ei::pset1<Packet>(0.0f);
    for (j = 0; j + kLanes <= n; j += kLanes) {
      const Packet e = ei::pexp(ei::psub(ei::pmul(ei::ploadu<Packet>(row + j), ps), shift));
      ei::pstoreu(row + j, e);
      total = ei::padd(total, e);
    }
    float z = ei::predux(total);
    for (; j < n; ++j) z += (row[j] = std::exp(row[j] * scale - scale * m));
    inv_sum[r] = 1.0f / z;
    if (p16) cpu::to_bf16(row, p16 + r * n, n);  // the row is still in L1
  }
}

// Long sequences with wide heads (Stable Diffusion's 4,096 tokens of 40–160 channels) in no-grad mode: per
// (batch, head, block of kTiledRows queries) S = Q Kᵀ and O = softmax(scale·S) V as two GEMMs (oneDNN,
// single-threaded on the calling thread) through a kTiledRows × Lk buffer per thread that stays in L2. No
// (Lq, Lk) score matrix is ever held, and the products run at the GEMM rate instead of the packet kernel's
// (measured on AMD EPYC Zen 5: the packet kernel ran SD1.5's attention at ~110 GFLOP/s on 2 threads).
// In bf16 (the precision knob) both products take bf16 operands: Q, K and V rounded once, P rounded after
// the float32 softmax; accumulation stays float32. Measured on an Intel Xeon with AMX (2 threads): SD1.5's
// attention at 512² took 0.85 s of a 2.2 s UNet evaluation with strided float32 operands (oneDNN's gemm:jit);
// with dense bf16 ones the evaluation takes 1.5 s, and with dense float32 ones the fp32 evaluation went from
// 3.37 to 3.21 s.
constexpr int64_t kTiledRows = 64;
bool use_tiled(const AttentionDims& a, bool saving_probs) {
  return !saving_probs && a.d >= 32 && a.dv >= 32 && a.lq >= 256 && a.lk >= 256;
}

Tensor attention_forward_tiled(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionDims& a) {
  using cpu::DType;
  using cpu::Layout;
  using cpu::MatmulPlan;
  using cpu::MatmulSpec;
  auto out = Tensor::empty({a.batch, a.lq, a.cv});
  FlopCounter::add(2 * a.batch * a.heads * a.lq * a.lk * (a.d + a.dv));
  const DType t = compute_precision() == Precision::kBf16 ? DType::kBf16 : DType::kF32;
  const int64_t blocks = (a.lq + kTiledRows - 1) / kTiledRows;
  const int64_t tail = a.lq - (blocks - 1) * kTiledRows;
  // oneDNN 2.6 runs its brgemm (AMX, AVX512-BF16, AVX-512) only on dense A and C, and with a plain B it copies
  // B into its blocked layout at every call (for K_hᵀ and V_h, 40 × 4,096 values per 64-query block); strided
  // operands fall back to its slower gemm:jit. So each head's K_hᵀ and V_h are packed once (PackedMatrix: the
  // transpose, and the rounding in bf16, in one reorder), Q_h is copied dense (B, heads, Lq, d) in the operand
  // type, and each block's O_h is written densely, then into its columns.
  const bool bf16 = t == DType::kBf16;
  const int64_t bhs = a.batch * a.heads;
  // S (m, Lk) = Q_blk (m, d) · K_hᵀ (d, Lk);  O_blk (m, dv) = P (m, Lk) · V_h (Lk, dv)
  auto scores_spec = [&](int64_t m) {
    return MatmulSpec{Layout::row_major(m, a.d, t), Layout::row_major(a.d, a.lk, t), a.lk, false, false};
  };
  auto values_spec = [&](int64_t m) {
    return MatmulSpec{Layout::row_major(m, a.lk, t), Layout::row_major(a.lk, a.dv, t), a.dv, false, false};
  };
  struct HeadPlans {
    std::unique_ptr<cpu::PackedMatrix> kt, vh;
    MatmulPlan s_full, s_tail, o_full, o_tail;
  };
  std::vector<HeadPlans> heads(static_cast<size_t>(bhs));
  std::vector<cpu::bf16> q16(static_cast<size_t>(bf16 ? bhs * a.lq * a.d : 0));   // Q_h dense, bf16
  std::vector<float> q32(static_cast<size_t>(bf16 ? 0 : bhs * a.lq * a.d));       // or float32
  parallel_for<Schedule::kDynamic>(bhs, bhs > 1, [&](int64_t bh) {
    const int64_t b = bh / a.heads, h = bh % a.heads;
    for (int64_t i = 0; i < a.lq; ++i) {
      const float* row = q.data() + (b * a.lq + i) * a.c + h * a.d;
      if (bf16) cpu::to_bf16(row, q16.data() + (bh * a.lq + i) * a.d, a.d);
      else std::copy_n(row, a.d, q32.data() + (bh * a.lq + i) * a.d);
    }
    HeadPlans& hp = heads[bh];
    hp.kt = std::make_unique<cpu::PackedMatrix>(k.data() + b * a.lk * a.c + h * a.d,
                                                Layout::transposed(a.d, a.lk, DType::kF32, a.c), t);
    hp.vh = std::make_unique<cpu::PackedMatrix>(v.data() + b * a.lk * a.cv + h * a.dv,
                                                Layout::row_major(a.lk, a.dv, DType::kF32, a.cv), t);
    hp.s_full = MatmulPlan(scores_spec(kTiledRows), *hp.kt);
    hp.o_full = MatmulPlan(values_spec(kTiledRows), *hp.vh);
    hp.s_tail = tail == kTiledRows ? hp.s_full : MatmulPlan(scores_spec(tail), *hp.kt);
    hp.o_tail = tail == kTiledRows ? hp.o_full : MatmulPlan(values_spec(tail), *hp.vh);
  });
  float* op = out.data();
  const float scale = static_cast<float>(a.scale);
  const int64_t tasks = bhs * blocks;
  // Per thread: S (m, Lk), P in bf16 (m, Lk), O_blk (m, dv), 1 / Σ_j p_j per query (m)
  auto scratch = [&] {
    return std::make_tuple(FloatBuffer(kTiledRows * a.lk), std::vector<cpu::bf16>(bf16 ? kTiledRows * a.lk : 0),
                           std::vector<float>(kTiledRows * a.dv), std::vector<float>(kTiledRows));
  };
  parallel_for_with<Schedule::kDynamic>(tasks, tasks > 1, scratch, [&](auto& state, int64_t task) {
    auto& [sbuf, pbuf, obuf, inv] = state;
    const int64_t blk = task % blocks, bh = task / blocks, h = bh % a.heads, b = bh / a.heads;
    const int64_t i0 = blk * kTiledRows, m = std::min(kTiledRows, a.lq - i0);
    const HeadPlans& hp = heads[bh];
    const bool full = m == kTiledRows;
    const int64_t q0 = (bh * a.lq + i0) * a.d;  // the block's first query in Q_h
    (full ? hp.s_full : hp.s_tail).run(bf16 ? static_cast<const void*>(q16.data() + q0) : q32.data() + q0, nullptr, sbuf.data());
    exp_rows(sbuf.data(), bf16 ? pbuf.data() : nullptr, inv.data(), m, a.lk, scale);
    (full ? hp.o_full : hp.o_tail).run(bf16 ? static_cast<const void*>(pbuf.data()) : sbuf.data(), nullptr, obuf.data());
    float* o = op + (b * a.lq + i0) * a.cv + h * a.dv;  // (m, dv), row stride Cv
    for (int64_t i = 0; i < m; ++i)
      for (int64_t c = 0; c < a.dv; ++c) o[i * a.cv + c] = obuf[i * a.dv + c] * inv[i];
  });
  return out;
}
}  // namespace

// The float forward: one fused pass per batch element and block of queries, vectorised across queries: a
// packet holds the same key's score for `lanes` consecutive queries, so the softmax over keys is plain packet
// arithmetic (max, exp, sum) with no horizontal reduction, and the small head sizes of these models (d = 8
// channels, 4 context tokens) still fill every lane. Qᵀ of the block is gathered once for all heads and Oᵀ
// written back once (whole rows, through packet transposes); a head's scores stay in an L1 buffer, and P
// leaves it only when backward needs it. Every element follows
// the same arithmetic in a fixed order, so results do not depend on where buffers sit.
template <>
TensorT<float> attention_forward<float>(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionDims& a,
                                        Tensor* probs_out) {
  if (use_tiled(a, probs_out != nullptr)) return attention_forward_tiled(q, k, v, a);
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
  // Per thread: Qᵀ (C, lanes) of every head, one head's scores then probabilities (Lk, lanes), Oᵀ (Cv, lanes)
  auto scratch = [&] { return std::make_tuple(FloatBuffer(a.c * lanes), FloatBuffer(a.lk * lanes), FloatBuffer(a.cv * lanes)); };
  parallel_for_with<Schedule::kDynamic>(a.batch * blocks, a.batch * blocks > 1, scratch, [&](auto& state, int64_t task) {
    auto& [qt, sc, ot] = state;
    const int64_t b = task / blocks, blk = task % blocks, i0 = blk * lanes, rows = std::min(lanes, a.lq - i0);
    gather_block(qp + (b * a.lq + i0) * a.c, a.c, rows, a.c, scale, qt.data());
    for (int64_t h = 0; h < a.heads; ++h) {
      const float* qth = qt.data() + h * a.d * lanes;    // (d, lanes)
      const float* kh = kp + b * a.lk * a.c + h * a.d;    // (Lk, d), row stride C
      const float* vh = vp + b * a.lk * a.cv + h * a.dv;  // (Lk, dv), row stride Cv
      float* sb = pp ? pp + ((b * a.heads + h) * blocks + blk) * a.lk * lanes : sc.data();  // (Lk, lanes)
      // S_j = scale · Q Kⱼᵀ for the block's queries, and the running max over keys
      P m = ei::pset1<P>(-std::numeric_limits<float>::infinity());
      int64_t j = 0;
      for (; j + 8 <= a.lk; j += 8) m = ei::pmax(m, block_scores<8>(qth, a.d, kh + j * a.c, a.c, sb + j * lanes));
      for (; j + 4 <= a.lk; j += 4) m = ei::pmax(m, block_scores<4>(qth, a.d, kh + j * a.c, a.c, sb + j * lanes));
      for (; j < a.lk; ++j) m = ei::pmax(m, block_scores<1>(qth, a.d, kh + j * a.c, a.c, sb + j * lanes));
      // P_j = exp(S_j − max) / Σ_j exp(S_j − max)
      P total = ei::pset1<P>(0.0f);
      for (int64_t j = 0; j < a.lk; ++j) {
        const P e = ei::pexp(ei::psub(ei::pload<P>(sb + j * lanes), m));
        ei::pstore(sb + j * lanes, e);
        total = ei::padd(total, e);
      }
      const P inv = ei::pdiv(ei::pset1<P>(1.0f), total);
      for (int64_t j = 0; j < a.lk; ++j) ei::pstore(sb + j * lanes, ei::pmul(ei::pload<P>(sb + j * lanes), inv));
      // Oᵀ_c = Σ_j P_j V[j, c]
      weighted_sum(sb, a.lk, vh, a.cv, a.dv, ot.data() + h * a.dv * lanes);
    }
    scatter_block(ot.data(), a.cv, rows, op + (b * a.lq + i0) * a.cv, a.cv, false, 1.0f);
  });
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
  parallel_for(a.batch * a.heads, a.batch * a.heads > 1, [&](int64_t bh) {
    const int64_t b = bh / a.heads, h = bh % a.heads;
    const Eigen::OuterStride<> sc(a.c), scv(a.cv);
    ConstHeadMap<T> gh(gp + b * a.lq * a.cv + h * a.dv, a.lq, a.dv, scv);
    ConstMatrixMap<T> pm(pp + bh * a.lq * a.lk, a.lq, a.lk);
    if (gv) HeadMap<T>(gv + b * a.lk * a.cv + h * a.dv, a.lk, a.dv, scv).noalias() += pm.transpose() * gh;
    if (!gq && !gk) return;
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
  });
}

// The float backward, in the forward kernel's orientation (a packet = one key for `lanes` queries) and from
// its saved P blocks. Per batch element, Gᵀ of every block of queries is gathered once for all heads (and ∂Qᵀ
// written back once); per head and block ∂P_j = G Vⱼᵀ, r = Σ_j ∂P_j ⊙ P_j, ∂S_j = P_j ⊙ (∂P_j − r) and
// ∂Qᵀ = scale Σ_j ∂S_j Kⱼ; then ∂V = Pᵀ G and ∂K = scale ∂Sᵀ Q, sums over all queries, by groups of `lanes` keys
// (key_group_sums: P and ∂S transposed to a packet per query) and one key at a time past the last group (against
// the gathered Gᵀ and Qᵀ, reduced across lanes). Padded query lanes have zero gradients and add nothing.
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
  // A first gradient is written, not zero-filled and added; only when q, k and v are distinct tensors (each
  // element of each gradient is then produced exactly once below).
  const bool distinct = q.impl() != k.impl() && k.impl() != v.impl() && q.impl() != v.impl();
  bool gq_fresh = false, gk_fresh = false, gv_fresh = false;
  auto buffer = [&](const Tensor& x, bool* fresh) -> float* {
    if (!needs_grad(x)) return nullptr;
    return distinct ? grad_buffer_to_write(x, fresh) : grad_buffer(x);
  };
  float* gq = buffer(q, &gq_fresh);
  float* gk = buffer(k, &gk_fresh);
  float* gv = buffer(v, &gv_fresh);
  const float scale = static_cast<float>(a.scale);
  FlopCounter::add(2 * a.batch * a.heads * a.lq * a.lk * (2 * a.dv + (gq ? a.d : 0) + (gk ? a.d : 0)));
  // Qᵀ is read only by the keys past the last whole group of `lanes` (∂K one key at a time)
  const bool tail_keys = a.lk % lanes != 0;
  // Per thread, per block: Gᵀ (Cv, lanes) and Qᵀ (C, lanes) of every head; one head's ∂S (Lk, lanes); ∂Qᵀ
  // (C, lanes); for key_group_sums a group's transposed tiles (blocks·lanes, lanes) and its sums (max(d, dv), lanes)
  auto scratch = [&] {
    return std::make_tuple(FloatBuffer(blocks * a.cv * lanes), FloatBuffer(tail_keys ? blocks * a.c * lanes : 0),
                           FloatBuffer(blocks * a.lk * lanes), FloatBuffer(blocks * a.c * lanes),
                           FloatBuffer(blocks * lanes * lanes), FloatBuffer(std::max(a.d, a.dv) * lanes));
  };
  parallel_for_with<Schedule::kDynamic>(a.batch, a.batch > 1, scratch, [&](auto& state, int64_t b) {
    auto& [gt, qt, ds, dqt, at, out] = state;
    for (int64_t blk = 0; blk < blocks; ++blk) {
      const int64_t i0 = blk * lanes, rows = std::min(lanes, a.lq - i0);
      gather_block(gp + (b * a.lq + i0) * a.cv, a.cv, rows, a.cv, 1.0f, gt.data() + blk * a.cv * lanes);
      if (tail_keys) gather_block(qp + (b * a.lq + i0) * a.c, a.c, rows, a.c, 1.0f, qt.data() + blk * a.c * lanes);
    }
    for (int64_t h = 0; h < a.heads; ++h) {
      const int64_t bh = b * a.heads + h;
      const float* kh = kp + b * a.lk * a.c + h * a.d;    // (Lk, d), row stride C
      const float* vh = vp + b * a.lk * a.cv + h * a.dv;  // (Lk, dv), row stride Cv
      const float* pbh = pp + bh * blocks * a.lk * lanes;  // P_j packets of every block
      const float* gth = gt.data() + h * a.dv * lanes;     // block blk at + blk·Cv·lanes
      const float* qth = tail_keys ? qt.data() + h * a.d * lanes : nullptr;  // block blk at + blk·C·lanes
      // ∂V[j, c] = Σ_i P[i, j] G[i, c]: whole groups of `lanes` keys through key_group_sums, the rest one by one
      const int64_t grouped = a.lk / lanes * lanes;
      if (gv) {
        for (int64_t j0 = 0; j0 < grouped; j0 += lanes)
          key_group_sums(pbh, a.lk, j0, blocks, a.lq, gp + b * a.lq * a.cv + h * a.dv, a.cv, a.dv, 1.0f, at.data(),
                         out.data(), gv + (b * a.lk + j0) * a.cv + h * a.dv, a.cv, gv_fresh);
        for (int64_t j = grouped; j < a.lk; ++j)
          for (int64_t c = 0; c < a.dv; ++c) {
            P acc = ei::pset1<P>(0.0f);
            for (int64_t blk = 0; blk < blocks; ++blk)
              acc = ei::pmadd(ei::pload<P>(pbh + (blk * a.lk + j) * lanes), ei::pload<P>(gth + (blk * a.cv + c) * lanes), acc);
            float& dst = gv[(b * a.lk + j) * a.cv + h * a.dv + c];
            dst = gv_fresh ? ei::predux(acc) : dst + ei::predux(acc);
          }
      }
      if (!gq && !gk) continue;
      for (int64_t blk = 0; blk < blocks; ++blk) {
        const float* pb = pbh + blk * a.lk * lanes;
        const float* gtb = gth + blk * a.cv * lanes;
        float* dsb = ds.data() + blk * a.lk * lanes;
        // ∂P_j = Σ_c Gᵀ_c V[j, c] for 8 keys at a time (8 FMA chains in registers, each Gᵀ_c loaded once for
        // all 8), then r = Σ_j ∂P_j ⊙ P_j
        int64_t j = 0;
        for (; j + 8 <= a.lk; j += 8) packet_products<8>(gtb, a.dv, vh + j * a.cv, 1, a.cv, dsb + j * lanes);
        for (; j + 4 <= a.lk; j += 4) packet_products<4>(gtb, a.dv, vh + j * a.cv, 1, a.cv, dsb + j * lanes);
        for (; j < a.lk; ++j) packet_products<1>(gtb, a.dv, vh + j * a.cv, 1, a.cv, dsb + j * lanes);
        P r_sum = ei::pset1<P>(0.0f);
        for (j = 0; j < a.lk; ++j) r_sum = ei::pmadd(ei::pload<P>(dsb + j * lanes), ei::pload<P>(pb + j * lanes), r_sum);
        // ∂S_j = P_j ⊙ (∂P_j − r)
        for (j = 0; j < a.lk; ++j)
          ei::pstore(dsb + j * lanes, ei::pmul(ei::pload<P>(pb + j * lanes), ei::psub(ei::pload<P>(dsb + j * lanes), r_sum)));
        // ∂Qᵀ_c = Σ_j ∂S_j K[j, c] (scaled when added to ∂Q below)
        if (gq) weighted_sum(dsb, a.lk, kh, a.c, a.d, dqt.data() + (blk * a.c + h * a.d) * lanes);
      }
      // ∂K[j, c] = scale Σ_i ∂S[i, j] Q[i, c]
      if (gk) {
        for (int64_t j0 = 0; j0 < grouped; j0 += lanes)
          key_group_sums(ds.data(), a.lk, j0, blocks, a.lq, qp + b * a.lq * a.c + h * a.d, a.c, a.d, scale, at.data(),
                         out.data(), gk + (b * a.lk + j0) * a.c + h * a.d, a.c, gk_fresh);
        for (int64_t j = grouped; j < a.lk; ++j)
          for (int64_t c = 0; c < a.d; ++c) {
            P acc = ei::pset1<P>(0.0f);
            for (int64_t blk = 0; blk < blocks; ++blk)
              acc = ei::pmadd(ei::pload<P>(ds.data() + (blk * a.lk + j) * lanes), ei::pload<P>(qth + (blk * a.c + c) * lanes), acc);
            float& dst = gk[(b * a.lk + j) * a.c + h * a.d + c];
            dst = gk_fresh ? scale * ei::predux(acc) : dst + scale * ei::predux(acc);
          }
      }
    }
    if (gq)
      for (int64_t blk = 0; blk < blocks; ++blk) {
        const int64_t i0 = blk * lanes, rows = std::min(lanes, a.lq - i0);
        scatter_block(dqt.data() + blk * a.c * lanes, a.c, rows, gq + (b * a.lq + i0) * a.c, a.c, !gq_fresh, scale);
      }
  });
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
