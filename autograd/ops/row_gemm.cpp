// The row-GEMM layer machinery (see row_gemm.h): float kernels on oneDNN in chunks, and the double reference.
#include "autograd/ops/row_gemm.h"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <mutex>
#include <optional>
#include <type_traits>

#include "autograd/batch_parallel.h"
#include "autograd/constant_weights.h"
#include "autograd/cpu/bf16.h"
#include "autograd/cpu/convolution.h"
#include "autograd/errors.h"
#include "autograd/flop_counter.h"
#include "autograd/inference_weights.h"
#include "autograd/lora_merge.h"
#include "autograd/ops/vector_math.h"
#include "autograd/parallel.h"
#include "autograd/storage.h"
#include "autograd/tape.h"
#include "autograd/threads.h"

namespace lcd::row_gemm {

using cpu::bf16;
using cpu::DType;
using cpu::Layout;
using cpu::MatmulPlan;
using cpu::MatmulSpec;
using cpu::PackedMatrix;

// ---- geometry, im2col, col2im ----

template <typename T>
ConvGeometry checked_nhwc_conv_geometry(const char* op, const TensorT<T>& x, const TensorT<T>& weight,
                                        const TensorT<T>& bias, const Conv2dOptions& o) {
  const std::string name = op;
  if (x.ndim() != 4 || weight.ndim() != 4 || x.size(3) != weight.size(1))
    throw ShapeError(name + ": input " + x.shape().str() + " (N, H, W, Cin) does not fit weight " +
                     weight.shape().str());
  if (bias.defined() && (bias.ndim() != 1 || bias.size(0) != weight.size(0)))
    throw ShapeError(name + ": bias " + bias.shape().str() + " does not fit weight " + weight.shape().str());
  if (o.stride < 1 || o.padding < 0 || o.extra_pad_end < 0)
    throw ValueError(name + ": stride must be ≥ 1 and padding ≥ 0");
  ConvGeometry g{x.size(0), x.size(3), x.size(1), x.size(2), weight.size(2), weight.size(3), o.stride, o.padding, 0, 0};
  g.out_h = (g.height + 2 * g.padding + o.extra_pad_end - g.kernel_h) / g.stride + 1;
  g.out_w = (g.width + 2 * g.padding + o.extra_pad_end - g.kernel_w) / g.stride + 1;
  if (g.out_h < 1 || g.out_w < 1)
    throw ShapeError(name + ": kernel " + weight.shape().str() + " larger than padded input " + x.shape().str());
  return g;
}

namespace {

template <typename In, typename Out>
inline void copy_run(const In* src, Out* dst, int64_t n) {
  if constexpr (std::is_same_v<In, Out>) {
    std::memcpy(dst, src, sizeof(In) * n);
  } else {
    static_assert(std::is_same_v<In, float> && std::is_same_v<Out, bf16>);
    cpu::to_bf16(src, dst, n);
  }
}

}  // namespace

template <typename In, typename Out>
void im2col_nhwc(const In* x, const ConvGeometry& g, int64_t row0, int64_t m, Out* rows) {
  const int64_t c = g.channels, k = g.kernel_h * g.kernel_w * c, per_sample = g.out_h * g.out_w;
  for (int64_t p = row0; p < row0 + m; ++p) {
    const int64_t n = p / per_sample, oy = (p % per_sample) / g.out_w, ox = p % g.out_w;
    Out* dst = rows + (p - row0) * k;
    for (int64_t i = 0; i < g.kernel_h; ++i) {
      const int64_t iy = oy * g.stride - g.padding + i;
      for (int64_t j = 0; j < g.kernel_w; ++j) {
        const int64_t ix = ox * g.stride - g.padding + j;
        Out* d = dst + (i * g.kernel_w + j) * c;
        if (iy >= 0 && iy < g.height && ix >= 0 && ix < g.width)
          copy_run(x + ((n * g.height + iy) * g.width + ix) * c, d, c);
        else
          std::memset(d, 0, sizeof(Out) * c);
      }
    }
  }
}

template <typename T>
void col2im_nhwc_accumulate(const T* rows, const ConvGeometry& g, int64_t row0, int64_t m, T* dx) {
  const int64_t c = g.channels, k = g.kernel_h * g.kernel_w * c, per_sample = g.out_h * g.out_w;
  for (int64_t p = row0; p < row0 + m; ++p) {
    const int64_t n = p / per_sample, oy = (p % per_sample) / g.out_w, ox = p % g.out_w;
    const T* src = rows + (p - row0) * k;
    for (int64_t i = 0; i < g.kernel_h; ++i) {
      const int64_t iy = oy * g.stride - g.padding + i;
      if (iy < 0 || iy >= g.height) continue;
      for (int64_t j = 0; j < g.kernel_w; ++j) {
        const int64_t ix = ox * g.stride - g.padding + j;
        if (ix < 0 || ix >= g.width) continue;
        const T* s = src + (i * g.kernel_w + j) * c;
        T* d = dx + ((n * g.height + iy) * g.width + ix) * c;
        for (int64_t q = 0; q < c; ++q) d[q] += s[q];
      }
    }
  }
}

namespace {

// ---- weights in patch order ----

// (O, C, kh, kw) → (O, kh, kw, C); a 2-D (O, C) weight is already in order.
constexpr const char* kNoValues =
    "a weight kept only in its inference form (keep_forward_form_only) was used for something other than a forward "
    "at the precision it was kept in";

// The (o, c, kk) values at src, canonical order, into out in patch order (o, kk, c).
template <typename T>
void to_patch_order(const T* src, int64_t o, int64_t c, int64_t kk, T* out) {
  // In parallel over output channels where the weight is large (an SD UNet's 3×3 kernels are packed per call).
  // Written in order (one output channel's c·kk source values stay in L1 while they are gathered).
  parallel_for(o, o * c * kk > (int64_t(1) << 20), [&](int64_t a) {
    for (int64_t t = 0; t < kk; ++t)
      for (int64_t ci = 0; ci < c; ++ci) out[(a * kk + t) * c + ci] = src[(a * c + ci) * kk + t];
  });
}

// Whether w's canonical order is its patch order: a linear's (N, K) or a 1×1 kernel's.
template <typename T>
bool in_patch_order(const TensorT<T>& w) {
  return w.ndim() != 4 || (w.size(2) == 1 && w.size(3) == 1);
}

template <typename T>
void to_patch_order(const TensorT<T>& w, T* out) {
  if (!w.data()) throw Error(kNoValues);
  if (in_patch_order(w)) {
    std::memcpy(out, w.data(), sizeof(T) * w.numel());
    return;
  }
  to_patch_order(w.data(), w.size(0), w.size(1), w.size(2) * w.size(3), out);
}

// One output channel's block of a patch-order gradient, src (kk, c), into the canonical dst (c, kk): written
// when `fresh`, else added. Whole groups of `lanes` channels go through one packet transpose (kk ≤ lanes rows,
// padded with −0, which leaves any sum unchanged, −0 included): the packet of channel ci then holds its kk
// values and lanes − kk padding values, stored whole; the padding lands on the next channel's values, which its
// own store (or the next block's, in the same increasing order) writes over, or, when adding, leaves as
// they were. A store that would reach `end` is left to the caller's scalar loop. Returns the first channel
// not done. (The scalar transpose was 3% of a bf16 diffusion step at batch 64, AMD EPYC Zen 5.)
int64_t add_transposed_blocks(const float* src, int64_t kk, int64_t c, bool fresh, float* dst, const float* end) {
  namespace ei = Eigen::internal;
  using Packet = vector_math::FloatPacket;
  constexpr int64_t lanes = vector_math::kLanes;
  if (kk > lanes) return 0;
  int64_t ci = 0;
  for (; ci + lanes <= c && dst + (ci + lanes - 1) * kk + lanes <= end; ci += lanes) {
    ei::PacketBlock<Packet, lanes> b;
    for (int64_t t = 0; t < lanes; ++t) b.packet[t] = t < kk ? ei::ploadu<Packet>(src + t * c + ci) : ei::pset1<Packet>(-0.0f);
    ei::ptranspose(b);
    for (int64_t u = 0; u < lanes; ++u) {
      float* d = dst + (ci + u) * kk;
      ei::pstoreu(d, fresh ? b.packet[u] : ei::padd(ei::ploadu<Packet>(d), b.packet[u]));
    }
  }
  return ci;
}

// grad(w) (canonical) += g (patch order); written rather than added where w has no gradient yet.
template <typename T>
void add_from_patch_order(const T* g, const TensorT<T>& w) {
  bool fresh = false;
  T* dst = grad_buffer_to_write(w, &fresh);
  if (in_patch_order(w)) {
    const int64_t n = w.numel();
    if (fresh) std::memcpy(dst, g, sizeof(T) * n);
    else
      for (int64_t i = 0; i < n; ++i) dst[i] += g[i];
    return;
  }
  const int64_t o = w.size(0), c = w.size(1), kk = w.size(2) * w.size(3);
  for (int64_t a = 0; a < o; ++a) {
    int64_t ci = 0;
    if constexpr (std::is_same_v<T, float>) ci = add_transposed_blocks(g + a * kk * c, kk, c, fresh, dst + a * c * kk, dst + o * c * kk);
    for (; ci < c; ++ci)
      for (int64_t t = 0; t < kk; ++t) {
        T& d = dst[(a * c + ci) * kk + t];
        d = fresh ? g[(a * kk + t) * c + ci] : d + g[(a * kk + t) * c + ci];
      }
  }
}

// ---- the float kernels ----

// A 64-byte aligned per-thread buffer; `slot` tells apart the buffers of one element type that a chunk uses
// at once (each type U has buffers of its own).
template <typename U>
U* scratch(int slot, int64_t n) {
  thread_local std::vector<char> buffers[6];
  std::vector<char>& b = buffers[slot];
  const size_t bytes = sizeof(U) * static_cast<size_t>(n) + 64;
  if (b.size() < bytes) b.resize(bytes + bytes / 4);
  return reinterpret_cast<U*>((reinterpret_cast<uintptr_t>(b.data()) + 63) & ~uintptr_t(63));
}

// A float matrix as a GEMM operand: converted to bf16 or copied, in a buffer of its own, or (float) a view of
// values that outlive it.
struct Operand {
  std::shared_ptr<void> storage;
  const void* view = nullptr;  // values owned elsewhere, alive while the operand is used (instead of storage)
  const void* data() const { return view ? view : storage.get(); }
};

Operand operand_of(const float* src, int64_t n, DType type) {
  Operand o;
  if (type == DType::kBf16) {
    auto p = std::shared_ptr<bf16>(new bf16[n], std::default_delete<bf16[]>());
    cpu::to_bf16(src, p.get(), n);
    o.storage = p;
  } else {
    auto p = std::shared_ptr<float>(new float[n], std::default_delete<float[]>());
    std::memcpy(p.get(), src, sizeof(float) * n);
    o.storage = p;
  }
  return o;
}

// The weight as a GEMM operand: Wᵀ (K, N) for forward, W (N, K) for backward-data. A frozen module parameter
// is packed once and cached in its TensorImpl (until its values change), a trainable one likewise while a
// ConstantWeightsScope is open (one training step's parts); anything else (trainable weights outside a scope,
// LoRA factors, EMA copies) is converted at each call.
enum class Use { kForward = 0, kBackwardData = 1 };

// Which forms a set of factors was asked for: merged, packed [use] and the direct convolution's (its plan);
// not merged, the tap matrix of the down factor (tap_matrix).
struct MergedForms {
  bool packed[2] = {false, false};
  std::optional<cpu::ConvPlan> conv;
  bool taps = false;
};

// W + sB·A in the kernels' layouts for a LoRA layer's products (no-grad forward and input gradient), with the
// factors it was formed from (canonical A and sB, compared bit for bit).
struct MergedWeight {
  std::vector<float> a, sb;
  std::unique_ptr<PackedMatrix> packed[2];  // [use]
  std::unique_ptr<cpu::ConvWeights> conv;   // for the direct convolution
  Operand taps;                             // A's tap matrix (tap_matrix), for down_by_taps
  uint64_t last_use = 0;
  MergedForms asked;  // since these factors took the set: what merge_lora_ahead forms for the next ones
};

struct PackedCache {
  uint64_t version = 0;
  uint64_t scope = 0;         // a trainable weight's: the ConstantWeightsScope it was made in (0: frozen)
  bool forward_only = false;  // the weight's float values are gone (keep_forward_form_only)
  std::unique_ptr<PackedMatrix> packed[2][2];  // [bf16?][use]
  std::unique_ptr<cpu::ConvWeights> conv[2];   // [bf16?], for the direct convolution
  MergedWeight merged[2][2];                   // [bf16?][two sets of factors: the online and the EMA LoRA]
  uint64_t uses = 0;
};

struct WeightOperand {
  const PackedMatrix* packed = nullptr;
  Operand plain;  // patch-order W (N, K) in the operand type, when not packed
  std::unique_ptr<PackedMatrix> own;  // a packed form made for this call only (a large weight)
};

// Frozen weights up to this size keep their packed forms (a second copy of the weight, in the kernels'
// layout) for the life of the weight; larger ones are packed again at each call and the copy dropped after
// it. Every weight of the Fashion-MNIST models is far below it; of an SD1.5 UNet (3.4 GB in float32) all
// but the smallest are above, so its resident memory stays at one copy of the weights (measured: 7.4 GB with
// every packed form kept), for about one extra pass over each weight per evaluation, where the 512² layers
// do hundreds of multiply-adds per weight value.
constexpr int64_t kKeptPackedBytes = int64_t(4) << 20;

bool cacheable(const Tensor& w) { return !w.requires_grad() && w.impl()->packable; }

// ConstantWeightsScope's number while one is open (0: none); set under g_cache_mutex, read by every call.
std::atomic<uint64_t> g_constant_scope{0};

// A trainable weight (a leaf that needs a gradient: written by the optimiser through the flat buffer, so no
// version count sees the write) inside a ConstantWeightsScope, where nothing writes it: its kernel forms are
// kept until the scope closes.
bool kept_in_scope(const Tensor& w) {
  return g_constant_scope.load(std::memory_order_relaxed) != 0 && w.requires_grad() && w.is_leaf() &&
         !w.impl()->packable;
}

// Whether w keeps its forward form only (set once, before any forward that reads it).
bool forward_only(const Tensor& w) {
  const auto cache = std::static_pointer_cast<PackedCache>(w.impl()->kernel_cache);
  return cache && cache->forward_only;
}

// The cache of a frozen weight at its current version (a fresh one after any write), or of a trainable one in
// the open ConstantWeightsScope (a fresh one in each scope). Callers hold the mutex.
std::mutex g_cache_mutex;  // batch-parallel parts pack the same weights concurrently on first use
uint64_t g_scopes_opened = 0;
int g_scope_depth = 0;                                    // nested scopes: the outermost one counts
std::vector<std::shared_ptr<PackedCache>> g_scope_caches;  // made in the open scope, emptied when it closes
PackedCache& cache_of(const Tensor& w) {
  TensorImpl<float>& impl = *w.impl();
  auto cache = std::static_pointer_cast<PackedCache>(impl.kernel_cache);
  const uint64_t scope = impl.packable ? 0 : g_constant_scope.load(std::memory_order_relaxed);
  if (!cache || cache->version != impl.version || cache->scope != scope) {
    if (cache && cache->forward_only) throw Error(std::string(kNoValues) + " (it was written)");
    cache = std::make_shared<PackedCache>();
    cache->version = impl.version;
    cache->scope = scope;
    impl.kernel_cache = cache;
    if (scope) g_scope_caches.push_back(cache);
  }
  return *cache;
}

// The form kept in slot() (a slot of cache_of(w): looked up under the mutex), made by make() when missing.
// Made outside the mutex: batch parts reach the same layer at the same time, and each makes the form (as
// it would uncached) instead of sleeping until the other has; the first one made is kept, a later one lives
// in `own` for its call.
template <typename Form, typename Slot, typename Make>
const Form* kept_form(const Slot& slot, std::unique_ptr<Form>& own, const Make& make) {
  {
    std::lock_guard<std::mutex> lock(g_cache_mutex);
    if (const auto& kept = slot()) return kept.get();
  }
  std::unique_ptr<Form> made = make();
  std::lock_guard<std::mutex> lock(g_cache_mutex);
  std::unique_ptr<Form>& kept = slot();
  if (kept) {
    own = std::move(made);
    return own.get();
  }
  kept = std::move(made);
  return kept.get();
}

// W in patch order: its own values where they already are (a linear's or 1×1 kernel's), else a copy.
struct PatchOrdered {
  std::unique_ptr<float[]> copy;
  const float* values;
  const float* data() const { return values; }
};
PatchOrdered patch_ordered(const Tensor& w) {
  if (!w.data()) throw Error(kNoValues);
  if (in_patch_order(w)) return {nullptr, w.data()};
  std::unique_ptr<float[]> copy(new float[static_cast<size_t>(w.numel())]);  // uninitialised: written whole
  to_patch_order(w, copy.get());
  const float* values = copy.get();
  return {std::move(copy), values};
}

WeightOperand weight_operand(const Tensor& w, int64_t n, int64_t k, Use use, DType type) {
  WeightOperand out;
  if (!cacheable(w) && !kept_in_scope(w)) {
    PatchOrdered p = patch_ordered(w);
    if (type == DType::kF32) {  // float operands as they are: w's own values (alive for the call) or the copy
      out.plain.view = p.values;
      out.plain.storage = std::shared_ptr<float>(p.copy.release(), std::default_delete<float[]>());
      return out;
    }
    out.plain = operand_of(p.data(), w.numel(), type);
    return out;
  }
  const Layout l = use == Use::kForward ? Layout::transposed(k, n, DType::kF32, k) : Layout::row_major(n, k, DType::kF32);
  if (w.numel() * int64_t(sizeof(float)) > kKeptPackedBytes && !forward_only(w)) {
    // Through recycled storage blocks (no fresh pages per call): W in patch order (a linear's or 1×1 kernel's
    // W already is), then its packed form.
    const bool in_order = w.ndim() != 4 || (w.size(2) == 1 && w.size(3) == 1);
    if (!w.data()) throw Error(kNoValues);
    std::shared_ptr<float> p;
    if (!in_order) {
      p = allocate_storage<float>(w.numel(), false);
      to_patch_order(w, p.get());
    }
    out.own = std::make_unique<PackedMatrix>(in_order ? w.data() : p.get(), l, type);
    out.packed = out.own.get();
    return out;
  }
  auto slot = [&]() -> std::unique_ptr<PackedMatrix>& { return cache_of(w).packed[type == DType::kBf16][int(use)]; };
  out.packed = kept_form(slot, out.own, [&] {
    const PatchOrdered p = patch_ordered(w);  // (throws for a forward-only weight)
    return std::make_unique<PackedMatrix>(p.data(), l, type);
  });
  return out;
}

// Chunks of rows with a row buffer of at most 1.5 MB (inside L2). Run op-parallel, a layer is cut into
// about 256-row chunks and at least 8 where the rows allow, to share among the threads; inside a part of a
// batch-parallel pass (already one thread's work) into chunks of up to 1024 rows, fewer and larger GEMM
// calls. Chunks hold whole samples where a sample fits the target. Backward always keeps samples whole (two
// chunks' col2im must never add into the same input pixel); forward cuts a larger sample (a 64×64 latent,
// a 512² image), so that one image still shares its rows among the threads and its im2col buffer stays
// bounded. Depends on the shapes and on that mode only, never on the thread count.
struct Chunks {
  int64_t rows, count;
};

enum class Pass { kForward, kBackward };

Chunks chunks_of(const Geometry& g, Pass pass) {
  int64_t per = std::max<int64_t>(g.rows_per_sample, 1);
  int64_t target = in_batch_part() ? 1024 : std::min<int64_t>(256, std::max<int64_t>(64, g.rows / 8));
  target = std::min<int64_t>(target, std::max<int64_t>(1, (3 << 17) / std::max<int64_t>(g.k, 1)));
  if (pass == Pass::kForward && per > target) per = 1;
  const int64_t rows = std::max<int64_t>(per, target / per * per);
  return {rows, (g.rows + rows - 1) / rows};
}

// Two plans per product: full chunks and the last, shorter one.
struct PlanPair {
  MatmulPlan full, tail;
  int64_t full_rows = 0;
  const MatmulPlan& operator()(int64_t m) const { return m == full_rows ? full : tail; }
};

// The plans of a weight-gradient product summed over chunks into one buffer (chunks run in turn on this
// thread): the first chunk writes the sum (no zero fill of the buffer), the others add. Where every chunk has
// a buffer of its own, or the sum goes into a gradient that already holds values, one pair serves all.
struct SumPlans {
  PlanPair rest;
  MatmulPlan first;  // chunk 0 when it writes
  const MatmulPlan& operator()(int64_t chunk, int64_t m) const { return chunk == 0 && first.defined() ? first : rest(m); }
};

template <typename MakeSpec>
PlanPair plans(const Chunks& ch, int64_t total_rows, MakeSpec make, const PackedMatrix* packed) {
  PlanPair p;
  p.full_rows = ch.rows;
  const int64_t tail = total_rows - (ch.count - 1) * ch.rows;
  auto one = [&](int64_t m) { return packed ? MatmulPlan(make(m), *packed) : MatmulPlan(make(m)); };
  p.full = one(std::min(ch.rows, total_rows));
  if (tail != ch.rows) p.tail = one(tail);
  return p;
}

// The input of a layer as the kernels read it: x itself, or for bf16 a bf16 copy of the whole input, made
// once per call before the chunks so that im2col copies bf16 runs (each input pixel sits in up to kh·kw
// patches and would otherwise be converted that often).
struct Source {
  const float* x = nullptr;
  const bf16* x_bf16 = nullptr;  // the calling thread's bf16 scratch slot 5, read by every thread of the call
};

Source source_of(const float* x, const Geometry& g, DType type) {
  Source s{x, nullptr};
  if (type != DType::kBf16 || !g.im2col) return s;
  const int64_t n = g.conv.batch * g.conv.height * g.conv.width * g.conv.channels;
  bf16* dst = scratch<bf16>(5, n);
  s.x_bf16 = dst;
  constexpr int64_t kBlock = 1 << 14;
  parallel_for((n + kBlock - 1) / kBlock, n > 8 * kBlock, [&](int64_t b) {
    cpu::to_bf16(x + b * kBlock, dst + b * kBlock, std::min(kBlock, n - b * kBlock));
  });
  return s;
}

// The rows of X for chunk [row0, row0 + m), as operands of `type`: x itself when it already is one.
const void* chunk_rows(const Source& src, const Geometry& g, int64_t row0, int64_t m, DType type) {
  if (!g.im2col && type == DType::kF32) return src.x + row0 * g.k;
  if (type == DType::kBf16) {
    bf16* buf = scratch<bf16>(0, m * g.k);
    if (g.im2col)
      im2col_nhwc(src.x_bf16, g.conv, row0, m, buf);
    else
      cpu::to_bf16(src.x + row0 * g.k, buf, m * g.k);
    return buf;
  }
  float* buf = scratch<float>(0, m * g.k);
  im2col_nhwc(src.x, g.conv, row0, m, buf);
  return buf;
}

// One tile of add_low_rank: rows i0..i0+R−1, columns c0..c0+Q·lanes−1, R·Q independent FMA chains, starting
// from src's values (src may be y itself).
template <int R, int Q>
inline void low_rank_tile(const float* src, float* y, int64_t ldy, const float* h, int64_t r, const float* u, int64_t n,
                          int64_t i0, int64_t c0) {
  namespace ei = Eigen::internal;
  using P = vector_math::FloatPacket;
  constexpr int64_t lanes = vector_math::kLanes;
  P acc[R][Q];
  for (int i = 0; i < R; ++i)
    for (int q = 0; q < Q; ++q) acc[i][q] = ei::ploadu<P>(src + (i0 + i) * ldy + c0 + q * lanes);
  for (int64_t t = 0; t < r; ++t) {
    P ut[Q];
    for (int q = 0; q < Q; ++q) ut[q] = ei::ploadu<P>(u + t * n + c0 + q * lanes);
    for (int i = 0; i < R; ++i) {
      const P ht = ei::pset1<P>(h[(i0 + i) * r + t]);
      for (int q = 0; q < Q; ++q) acc[i][q] = ei::pmadd(ht, ut[q], acc[i][q]);
    }
  }
  for (int i = 0; i < R; ++i)
    for (int q = 0; q < Q; ++q) ei::pstoreu(y + (i0 + i) * ldy + c0 + q * lanes, acc[i][q]);
}

// y (m × n, row stride ldy) = src + h (m × r) · u (r × n), in float32, src laid out like y (or y itself: +=):
// the LoRA branch's fp32 up-projection (u = (sB)ᵀ; bf16 runs it as an AMX GEMM, see forward) and the merge
// W + sB·A (h = sB, u = A). With r = 16 an fp32 GEMM call is all overhead (oneDNN ran these at ~60 GFLOP/s);
// here a panel of u (r × 4 packets) stays in L1 while the rows stream by, two rows at a time so that eight FMA chains cover the FMA latency. Every element
// sums over t in order, whichever tile it falls in.
void add_low_rank(float* y, int64_t ldy, const float* h, int64_t r, const float* u, int64_t n, int64_t m,
                  const float* src = nullptr) {
  if (!src) src = y;
  constexpr int64_t lanes = vector_math::kLanes;
  // Rows in blocks of 16, each swept across all columns before the next: a merge's rows are K wide (a 3×3
  // kernel's a page or more apart), and sweeping all N of them per column block missed the TLB at every row.
  constexpr int64_t kRowBlock = 16;
  for (int64_t i0 = 0; i0 < m; i0 += kRowBlock) {
    const int64_t i1 = std::min(m, i0 + kRowBlock);
    int64_t c0 = 0;
    for (; c0 + 4 * lanes <= n; c0 += 4 * lanes) {
      int64_t i = i0;
      for (; i + 2 <= i1; i += 2) low_rank_tile<2, 4>(src, y, ldy, h, r, u, n, i, c0);
      if (i < i1) low_rank_tile<1, 4>(src, y, ldy, h, r, u, n, i, c0);
    }
    for (; c0 + lanes <= n; c0 += lanes) {
      int64_t i = i0;
      for (; i + 4 <= i1; i += 4) low_rank_tile<4, 1>(src, y, ldy, h, r, u, n, i, c0);
      for (; i < i1; ++i) low_rank_tile<1, 1>(src, y, ldy, h, r, u, n, i, c0);
    }
    for (; c0 < n; ++c0)  // the last columns, one at a time
      for (int64_t i = i0; i < i1; ++i) {
        float acc = src[i * ldy + c0];
        for (int64_t t = 0; t < r; ++t) acc += h[i * r + t] * u[t * n + c0];
        y[i * ldy + c0] = acc;
      }
  }
}

// sB (N, r), float32: the up factor times the LoRA scale, as every product of the branch reads it.
std::vector<float> scaled_up(const Tensor& up, double scale) {
  std::vector<float> sb(static_cast<size_t>(up.numel()));
  const float* u = up.data();
  for (size_t i = 0; i < sb.size(); ++i) sb[i] = static_cast<float>(u[i] * scale);
  return sb;
}

// W + sB·A (N, K) in W's canonical order, float32 (A canonical too: the low-rank product treats every
// column alike, so no patch-order copy is needed).
std::unique_ptr<float[]> merged_canonical(const Tensor& w, const float* sb, const float* a, int64_t n, int64_t r,
                                          int64_t k) {
  if (!w.data()) throw Error(kNoValues);
  FlopCounter::add(2 * n * r * k);
  std::unique_ptr<float[]> m(new float[n * k]);  // written whole below: no zero fill
  add_low_rank(m.get(), k, sb, r, a, k, n, w.data());
  return m;
}

// Merged values m (canonical order, W's shape) in patch order: a copy for a k×k kernel, null where the
// canonical order already is the patch order.
std::unique_ptr<float[]> patch_order_copy(const Tensor& w, const float* m) {
  if (in_patch_order(w)) return nullptr;
  std::unique_ptr<float[]> p(new float[w.numel()]);
  to_patch_order(m, w.size(0), w.size(1), w.size(2) * w.size(3), p.get());
  return p;
}

// The same in patch order.
std::unique_ptr<float[]> merged_patch_order(const Tensor& w, const float* sb, const float* a, int64_t n, int64_t r,
                                            int64_t k) {
  std::unique_ptr<float[]> m = merged_canonical(w, sb, a, n, r, k);
  std::unique_ptr<float[]> p = patch_order_copy(w, m.get());
  return p ? std::move(p) : std::move(m);
}

// The packed form of a merged weight (canonical values m) for `use`.
std::unique_ptr<PackedMatrix> packed_merge(const Tensor& w, const float* m, int64_t n, int64_t k, Use use, DType type) {
  const std::unique_ptr<float[]> p = patch_order_copy(w, m);
  const Layout l = use == Use::kForward ? Layout::transposed(k, n, DType::kF32, k) : Layout::row_major(n, k, DType::kF32);
  return std::make_unique<PackedMatrix>(p ? p.get() : m, l, type);
}

// The merged set of a frozen W for factors (canonical A, sB): kept with W's packed forms, so the parts of a
// batch-parallel pass and the passes of one step share one merge. Two sets are kept (a training step uses the
// online and the EMA factors); new factors take the set used least recently, its forms dropped and what it
// was asked for handed to `replaced` when given. Callers hold the mutex.
MergedWeight& merged_set(const Tensor& w, const float* sb, const float* a, int64_t n, int64_t r, int64_t k, DType type,
                         MergedForms* replaced = nullptr) {
  auto same = [](const std::vector<float>& kept, const float* now, int64_t len) {
    return static_cast<int64_t>(kept.size()) == len && std::memcmp(kept.data(), now, sizeof(float) * len) == 0;
  };
  PackedCache& cache = cache_of(w);
  MergedWeight* sets = cache.merged[type == DType::kBf16];
  MergedWeight* mw = nullptr;
  for (int i = 0; i < 2 && !mw; ++i)
    if (same(sets[i].a, a, r * k) && same(sets[i].sb, sb, n * r)) mw = &sets[i];
  if (!mw) {
    mw = sets[0].last_use <= sets[1].last_use ? &sets[0] : &sets[1];
    if (replaced) *replaced = mw->asked;
    *mw = MergedWeight{};
    mw->a.assign(a, a + r * k);
    mw->sb.assign(sb, sb + n * r);
  }
  mw->last_use = ++cache.uses;
  return *mw;
}

std::atomic<int64_t> g_forms_merged_ahead{0}, g_forms_merged_on_demand{0};

const PackedMatrix* merged_weight(const Tensor& w, const float* sb, const float* a, int64_t n, int64_t r, int64_t k,
                                  Use use, DType type) {
  std::lock_guard<std::mutex> lock(g_cache_mutex);
  MergedWeight& mw = merged_set(w, sb, a, n, r, k, type);
  mw.asked.packed[int(use)] = true;
  if (!mw.packed[int(use)]) {
    mw.packed[int(use)] = packed_merge(w, merged_canonical(w, sb, a, n, r, k).get(), n, k, use, type);
    ++g_forms_merged_on_demand;
  }
  return mw.packed[int(use)].get();
}

// ---- the direct convolution (forward of k×k layers that save nothing for backward) ----

cpu::ConvSpec conv_spec(const Geometry& g, int64_t n, DType type, bool bias) {
  const ConvGeometry& c = g.conv;
  return {c.batch, c.height, c.width, c.channels, n, c.kernel_h, c.kernel_w, c.stride, c.padding, c.out_h, c.out_w,
          type, bias};
}

// The weights of a direct convolution, cached like weight_operand's packed forms (large ones made per call).
struct ConvOperand {
  const cpu::ConvWeights* weights = nullptr;
  std::unique_ptr<cpu::ConvWeights> own;
};

ConvOperand conv_operand(const Tensor& w, const cpu::ConvPlan& plan, DType type) {
  ConvOperand out;
  using Order = cpu::ConvWeights::Order;
  if ((!cacheable(w) && !kept_in_scope(w)) ||
      (w.numel() * int64_t(sizeof(float)) > kKeptPackedBytes && !forward_only(w))) {
    out.own = std::make_unique<cpu::ConvWeights>(w.data(), Order::kOIHW, plan);
    out.weights = out.own.get();
    return out;
  }
  auto slot = [&]() -> std::unique_ptr<cpu::ConvWeights>& { return cache_of(w).conv[type == DType::kBf16]; };
  out.weights = kept_form(slot, out.own, [&] {
    if (!w.data()) throw Error(kNoValues);
    return std::make_unique<cpu::ConvWeights>(w.data(), Order::kOIHW, plan);
  });
  return out;
}

const cpu::ConvWeights* merged_conv_operand(const Tensor& w, const float* sb, const float* a, int64_t n, int64_t r,
                                            int64_t k, const cpu::ConvPlan& plan, DType type) {
  std::lock_guard<std::mutex> lock(g_cache_mutex);
  MergedWeight& mw = merged_set(w, sb, a, n, r, k, type);
  mw.asked.conv = plan;
  if (!mw.conv) {
    mw.conv = std::make_unique<cpu::ConvWeights>(merged_canonical(w, sb, a, n, r, k).get(), cpu::ConvWeights::Order::kOIHW, plan);
    ++g_forms_merged_on_demand;
  }
  return mw.conv.get();
}

// T (C, taps·r) in the operand type: the taps of a k×k down factor A (r, C, kh, kw) side by side,
// T[c, τ·r + q] = A[q, c, τ], for down_by_taps.
Operand tap_matrix(const float* a, int64_t r, int64_t c, int64_t taps, DType type) {
  const int64_t n = taps * r;
  std::vector<float> t(static_cast<size_t>(c * n));
  for (int64_t ci = 0; ci < c; ++ci)
    for (int64_t tau = 0; tau < taps; ++tau)
      for (int64_t q = 0; q < r; ++q) t[ci * n + tau * r + q] = a[(q * c + ci) * taps + tau];
  return operand_of(t.data(), c * n, type);
}

// The tap matrix of A, kept with W's merged set for (A, sB) (the parts of a pass share it), or made for this
// call where W keeps no forms.
Operand tap_operand(const Tensor& w, const float* sb, const float* a, int64_t n, int64_t r, int64_t k, DType type) {
  const int64_t c = w.size(1), taps = w.size(2) * w.size(3);
  if (!cacheable(w)) return tap_matrix(a, r, c, taps, type);
  std::lock_guard<std::mutex> lock(g_cache_mutex);
  MergedWeight& mw = merged_set(w, sb, a, n, r, k, type);
  mw.asked.taps = true;
  if (!mw.taps.data()) {
    mw.taps = tap_matrix(a, r, c, taps, type);
    ++g_forms_merged_on_demand;
  }
  return mw.taps;
}

// Ahead of the passes that read them: the forms of one site's merged set, formed off the lock.
void merge_ahead(const LoraMergeSite& site, DType type) {
  const Tensor& w = site.weight;
  if (!site.down.defined() || !cacheable(w)) return;
  const int64_t n = w.size(0), k = w.numel() / n, r = site.down.size(0);
  const std::vector<float> sb = scaled_up(site.up, site.scale);
  const float* a = site.down.data();
  MergedForms make;  // what the set these factors take was asked for under its previous factors
  {
    std::lock_guard<std::mutex> lock(g_cache_mutex);
    if (forward_only(w)) return;
    merged_set(w, sb.data(), a, n, r, k, type, &make);
  }
  if (!make.packed[0] && !make.packed[1] && !make.conv && !make.taps) return;
  Operand taps;
  if (make.taps) taps = tap_matrix(a, r, w.size(1), w.size(2) * w.size(3), type);
  const bool merges = make.packed[0] || make.packed[1] || make.conv;
  const std::unique_ptr<float[]> m = merges ? merged_canonical(w, sb.data(), a, n, r, k) : nullptr;
  std::unique_ptr<PackedMatrix> packed[2];
  for (int u = 0; u < 2; ++u)
    if (make.packed[u]) packed[u] = packed_merge(w, m.get(), n, k, Use(u), type);
  std::unique_ptr<cpu::ConvWeights> conv;
  if (make.conv) conv = std::make_unique<cpu::ConvWeights>(m.get(), cpu::ConvWeights::Order::kOIHW, *make.conv);
  std::lock_guard<std::mutex> lock(g_cache_mutex);
  MergedWeight& mw = merged_set(w, sb.data(), a, n, r, k, type);
  for (int u = 0; u < 2; ++u)
    if (packed[u] && !mw.packed[u]) {
      mw.packed[u] = std::move(packed[u]);
      ++g_forms_merged_ahead;
    }
  if (conv && !mw.conv) {
    mw.conv = std::move(conv);
    ++g_forms_merged_ahead;
  }
  if (taps.data() && !mw.taps.data()) {
    mw.taps = taps;
    ++g_forms_merged_ahead;
  }
}

// The unpacked W + sB·A (N, K) in the operand type, for a W that is not cached (trained or an alias).
Operand merged_operand(const Tensor& w, const float* sb, const float* a, int64_t n, int64_t r, int64_t k, DType type) {
  return operand_of(merged_patch_order(w, sb, a, n, r, k).get(), n * k, type);
}

DType operand_type() { return compute_precision() == Precision::kBf16 ? DType::kBf16 : DType::kF32; }

// Inference-only weights (autograd/inference_weights.h): the forward form the kernels will ask for, made
// now. A k×k kernel gets the direct convolution's layout for a nominal image (the layouts oneDNN picks
// depend on the channels, not the image size; another layout is reordered from this one on request), or
// where no direct kernel exists, the packed patch-order matrix the im2col path reads.
int64_t keep_forward_form_only_impl(const Tensor& w) {
  if (!w.defined() || (w.ndim() != 2 && w.ndim() != 4))
    throw ValueError("keep_forward_form_only: only weights of linears and convolutions, not " +
                     (w.defined() ? w.shape().str() : std::string("an undefined tensor")));
  if (!cacheable(w)) return 0;  // trained, or not a module parameter (its values may change behind its back)
  const DType t = operand_type();
  std::lock_guard<std::mutex> lock(g_cache_mutex);
  PackedCache& cache = cache_of(w);
  if (cache.forward_only) return 0;
  const int64_t n = w.size(0), k = w.numel() / n;
  const bool spatial = w.ndim() == 4 && w.size(2) * w.size(3) > 1;
  bool direct = false;
  if (spatial) {
    const int64_t kh = w.size(2), kw = w.size(3), size = 16;
    const cpu::ConvPlan plan(cpu::ConvSpec{1, size, size, w.size(1), n, kh, kw, 1, (kh - 1) / 2,
                                           size + 2 * ((kh - 1) / 2) - kh + 1, size + 2 * ((kh - 1) / 2) - kw + 1, t, true});
    direct = plan.available();
    if (direct) cache.conv[t == DType::kBf16] = std::make_unique<cpu::ConvWeights>(w.data(), cpu::ConvWeights::Order::kOIHW, plan);
  }
  if (!direct) {
    const PatchOrdered p = patch_ordered(w);
    cache.packed[t == DType::kBf16][int(Use::kForward)] =
        std::make_unique<PackedMatrix>(p.data(), Layout::transposed(k, n, DType::kF32, k), t);
  }
  cache.forward_only = true;
  w.impl()->data.reset();
  return w.numel() * int64_t(sizeof(float));
}

}  // namespace

namespace {
std::atomic<LayerObserver> g_observer{nullptr};
}
void observe_layers(LayerObserver observer) { g_observer = observer; }

namespace {
// Z buffers up to this size: H = X ⊛ A goes by taps (down_by_taps) where Z (every input pixel against every tap)
// fits it, else by a convolution.
constexpr int64_t kTapProductBytes = int64_t(4) << 20;

// Whether H = X ⊛ A goes by taps: a k×k stride-1 convolution whose output has its input's size, Z within bounds.
bool by_taps(const ConvGeometry& c, int64_t r) {
  return c.kernel_h * c.kernel_w > 1 && c.stride == 1 && c.out_h == c.height && c.out_w == c.width &&
         c.batch * c.height * c.width * c.kernel_h * c.kernel_w * r * int64_t(sizeof(float)) <= kTapProductBytes;
}

// One output row (b, oh) of H (W, r): H[ow, q] = Σ_τ Z[pixel(τ), τ·r + q] over the taps inside the image, τ in
// order. R > 0: r = R known here (one packet a tap at r = 16).
template <int R>
void tap_row(const ConvGeometry& c, const float* z, int64_t r, int64_t b, int64_t oh, float* h) {
  if (R) r = R;
  const int64_t n = c.kernel_h * c.kernel_w * r;
  for (int64_t ow = 0; ow < c.width; ++ow) {
    float acc[R ? R : 1];                // a known r: the sums in registers
    float* out = R ? acc : h + ow * r;  // else in place
    std::fill(out, out + r, 0.0f);
    for (int64_t i = 0; i < c.kernel_h; ++i) {
      const int64_t ih = oh - c.padding + i;
      if (ih < 0 || ih >= c.height) continue;
      const float* zrow = z + (b * c.height + ih) * c.width * n;
      for (int64_t j = 0; j < c.kernel_w; ++j) {
        const int64_t iw = ow - c.padding + j;
        if (iw < 0 || iw >= c.width) continue;
        const float* zt = zrow + iw * n + (i * c.kernel_w + j) * r;  // (r)
#pragma omp simd
        for (int64_t q = 0; q < r; ++q) out[q] += zt[q];
      }
    }
    if (R) std::copy_n(acc, r, h + ow * r);
  }
}

// H (M, r) = X ⊛ A for by_taps layers, as one GEMM and a shifted sum instead of a convolution with r = 16
// outputs (oneDNN's brgconv ran those at 150–250 GFLOP/s a thread against ~400 for the layer's own, and
// reordered A at every call; AMD EPYC Zen 5, bf16):
//   1. T (C, taps·r): A's taps side by side (tap_matrix, kept with the factors' merged set);
//   2. Z (P, taps·r) = X (P, C) · T, every input pixel against every tap (in a batch part one GEMM, else by
//      the layer's chunks);
//   3. H[p, q] = Σ_τ Z[p + offset(τ), τ·r + q] over the taps whose pixel lies inside the image (the zero
//      padding adds nothing), τ in order.
// The products are a convolution's (X's values against A's, rounded alike in bf16), summed in float32 in
// another order.
void down_by_taps(const ConvGeometry& c, const Source& x, const Operand& tap_m, int64_t r, DType t,
                  const Chunks& layer, float* h) {
  const int64_t C = c.channels, n = c.kernel_h * c.kernel_w * r, P = c.batch * c.height * c.width;
  const Chunks ch = in_batch_part() ? Chunks{P, 1} : layer;
  const PlanPair product = plans(ch, P, [&](int64_t m) {
    return MatmulSpec{Layout::row_major(m, C, t), Layout::row_major(C, n, t), n, false, false};
  }, nullptr);
  float* z = scratch<float>(2, P * n);  // (P, taps·r), read by every thread below
  parallel_for<Schedule::kDynamic>(ch.count, ch.count > 1, [&](int64_t k) {
    const int64_t row0 = k * ch.rows, m = std::min(ch.rows, P - row0);
    const void* rows = t == DType::kBf16 ? static_cast<const void*>(x.x_bf16 + row0 * C) : x.x + row0 * C;
    product(m).run(rows, tap_m.data(), z + row0 * n);
  });
  const int64_t image_rows = c.batch * c.height;
  parallel_for<Schedule::kDynamic>(image_rows, image_rows >= 16, [&](int64_t row) {
    const int64_t b = row / c.height, oh = row % c.height;
    float* hr = h + row * c.width * r;  // (W, r)
    if (r == 16)
      tap_row<16>(c, z, r, b, oh, hr);
    else
      tap_row<0>(c, z, r, b, oh, hr);
  });
}
}  // namespace

template <>
void forward<float>(const Layer<float>& L, float* y, float* saved_h) {
  const Geometry& g = L.g;
  if (LayerObserver o = g_observer.load()) o(g);
  const DType t = operand_type();
  const int64_t M = g.rows, K = g.k, N = g.n, r = L.lora.rank();
  const Chunks ch = chunks_of(g, Pass::kForward);
  const bool bias = L.bias.defined();
  // LoRA on a frozen W, no H to save (a no-grad forward), fp32: Y = X·(W + sB·A)ᵀ with the merged weight
  // (merged_weight). Otherwise Y = X·Wᵀ, H = X·Aᵀ and Y += H·(sB)ᵀ (below): a training
  // forward needs H for backward anyway, and the factors change at every step, so merging would cost a pass
  // over W per step and hold the other parts of the pass until it is done (measured, bf16 lcd-step on the Xeon
  // with AMX: the student's merges took 43 ms of thread time a step, a third of it waiting).
  // bf16 never merges the forward: rounding W + sB·A to bf16 perturbs the layer differently from rounding W,
  // so an LCD target formed merged and a student formed unmerged would be two networks ~2⁻⁹ apart, and the
  // pseudo-Huber loss (c = 0.001) reads that noise as signal (measured at a trained adapter, bench/bf16_gradient:
  // the bf16 LoRA gradient's cosine to fp32's −0.19–0.44 merged, 0.69–0.93 unmerged). In fp32 the two agree
  // to ~1e-7.
  const bool merged = r && t == DType::kF32 && cacheable(L.weight) && !saved_h;
  const bool want_h = r && !merged;
  FlopCounter::add(2 * M * K * N + (want_h ? 2 * M * r * K + 2 * M * r * N : 0));
  const std::vector<float> sb = r ? scaled_up(L.lora.up, L.lora.scale) : std::vector<float>();  // sB (N, r)
  const float* a_canonical = r ? L.lora.down.data() : nullptr;                                  // A (r, K)
  std::vector<float> up_t;  // (sB)ᵀ (r, N)
  Operand up_op;
  PlanPair up_plan;
  if (want_h) {
    up_t.resize(static_cast<size_t>(r * N));
    for (int64_t o = 0; o < N; ++o)
      for (int64_t q = 0; q < r; ++q) up_t[q * N + o] = sb[o * r + q];
    if (t == DType::kBf16) {
      up_op = operand_of(up_t.data(), r * N, t);
      up_plan = plans(ch, M, [&](int64_t m) {
        return MatmulSpec{Layout::row_major(m, r, t), Layout::row_major(r, N, t), N, true, false};
      }, nullptr);
    }
  }
  // The branch's up-projection for rows [row0, row0 + m): Y += H·(sB)ᵀ, H (m, r). In bf16 a bf16 GEMM too (AMX
  // at K = r still beats add_low_rank's fp32 FMAs: bf16 lcd-step 4.6% faster in the median of 6 interleaved
  // pairs, Xeon with AMX, 2 threads; on the AMD EPYC Zen 5 the fp32 FMAs were no faster, lcd-step-128 0.464
  // against 0.452 s).
  auto add_up_projection = [&](const float* h, int64_t row0, int64_t m) {
    if (t == DType::kBf16) {
      bf16* hb = scratch<bf16>(2, m * r);
      cpu::to_bf16(h, hb, m * r);
      up_plan(m).run(hb, up_op.data(), y + row0 * N);
    } else {
      add_low_rank(y + row0 * N, N, h, r, up_t.data(), N, m);  // float32
    }
  };
  // A k×k convolution reads the image in place: one direct convolution (threaded by oneDNN, or on this thread
  // inside a batch part) instead of im2col rows and a GEMM per chunk. An unmerged branch adds its
  // down-projection H = X ⊛ A, by taps (down_by_taps) where the layer keeps the image's size at stride 1, else
  // as a second direct convolution (A reordered per call: the factors change at every step), into saved_h
  // when backward needs it, and then Y += H·(sB)ᵀ by chunks.
  if (g.im2col && g.conv.kernel_h * g.conv.kernel_w > 1) {
    const cpu::ConvPlan plan(conv_spec(g, N, t, bias));
    const bool taps = want_h && by_taps(g.conv, r);
    const cpu::ConvPlan down = want_h && !taps ? cpu::ConvPlan(conv_spec(g, r, t, false)) : plan;
    if (plan.available() && down.available()) {
      ConvOperand cw;
      if (merged)
        cw.weights = merged_conv_operand(L.weight, sb.data(), a_canonical, N, r, K, plan, t);
      else
        cw = conv_operand(L.weight, plan, t);
      const Source x = source_of(L.x.data(), g, t);  // (batch, H, W, Cin)
      const void* image = t == DType::kBf16 ? static_cast<const void*>(x.x_bf16) : x.x;
      plan.run(image, *cw.weights, y, bias ? L.bias.data() : nullptr);
      if (!want_h) return;
      float* h = saved_h ? saved_h : scratch<float>(1, M * r);  // (M, r), read by every thread below
      if (taps)
        down_by_taps(g.conv, x, tap_operand(L.weight, sb.data(), a_canonical, N, r, K, t), r, t, ch, h);
      else
        down.run(image, cpu::ConvWeights(a_canonical, cpu::ConvWeights::Order::kOIHW, down), h, nullptr);
      parallel_for<Schedule::kDynamic>(ch.count, ch.count > 1, [&](int64_t c) {
        const int64_t row0 = c * ch.rows;
        add_up_projection(h + row0 * r, row0, std::min(ch.rows, M - row0));
      });
      return;
    }
  }
  WeightOperand w;
  if (merged)
    w.packed = merged_weight(L.weight, sb.data(), a_canonical, N, r, K, Use::kForward, t);
  else
    w = weight_operand(L.weight, N, K, Use::kForward, t);
  const PlanPair main = plans(ch, M, [&](int64_t m) {
    MatmulSpec s{Layout::row_major(m, K, t), Layout::transposed(K, N, t, K), N, false, bias};
    return s;
  }, w.packed);
  Operand a_op;
  PlanPair down_plan;
  if (want_h) {
    std::vector<float> a(static_cast<size_t>(r * K));  // patch-order A (r, K), copied by operand_of
    to_patch_order(L.lora.down, a.data());
    a_op = operand_of(a.data(), r * K, t);
    down_plan = plans(ch, M, [&](int64_t m) {
      return MatmulSpec{Layout::row_major(m, K, t), Layout::transposed(K, r, t, K), r, false, false};
    }, nullptr);
  }
  const Source x = source_of(L.x.data(), g, t);
  const float* b = bias ? L.bias.data() : nullptr;
  const void* w_plain = w.plain.data();
  parallel_for<Schedule::kDynamic>(ch.count, ch.count > 1, [&](int64_t c) {
    const int64_t row0 = c * ch.rows, m = std::min(ch.rows, M - row0);
    const void* rows = chunk_rows(x, g, row0, m, t);  // (m, K)
    main(m).run(rows, w_plain, y + row0 * N, b);
    if (!want_h) return;
    float* h = saved_h ? saved_h + row0 * r : scratch<float>(1, m * r);  // (m, r)
    down_plan(m).run(rows, a_op.data(), h);
    add_up_projection(h, row0, m);
  });
}

namespace {

// ∂x += convᵀ(∂Y) through oneDNN's backward-data convolution, when it has a direct kernel for the shape;
// false (nothing done) otherwise. sb and a are the LoRA factors (sB (N, r), canonical A (r, K)) when r > 0.
// In bf16, *grad_bf16 is then ∂Y rounded to bf16 (this thread's scratch slot 3), for the weight-side products.
bool direct_backward_data(const Layer<float>& L, const float* grad_y, DType t, const float* sb, const float* a,
                          const bf16** grad_bf16) {
  const Geometry& g = L.g;
  const int64_t M = g.rows, K = g.k, N = g.n, r = L.lora.rank();
  cpu::ConvSpec spec = conv_spec(g, N, t, false);
  spec.pass = cpu::ConvPass::kBackwardData;
  const cpu::ConvPlan plan(spec);
  if (!plan.available()) return false;
  ConvOperand cw;
  if (r && cacheable(L.weight)) {
    cw.weights = merged_conv_operand(L.weight, sb, a, N, r, K, plan, t);
  } else if (r) {
    cw.own = std::make_unique<cpu::ConvWeights>(merged_canonical(L.weight, sb, a, N, r, K).get(),
                                                 cpu::ConvWeights::Order::kOIHW, plan);
    cw.weights = cw.own.get();
  } else {
    cw = conv_operand(L.weight, plan, t);
  }
  const void* gy = grad_y;  // (batch, Ho, Wo, N)
  if (t == DType::kBf16) {
    bf16* gb = scratch<bf16>(3, M * N);
    cpu::to_bf16(grad_y, gb, M * N);
    gy = gb;
    *grad_bf16 = gb;
  }
  const ConvGeometry& c = g.conv;
  const int64_t n = c.batch * c.height * c.width * c.channels;
  bool fresh = false;
  float* dx = grad_buffer_to_write(L.x, &fresh);  // (batch, H, W, Cin)
  if (fresh) {  // x's first gradient: written in place, no zero fill and add
    plan.run(gy, *cw.weights, dx, nullptr);
    return true;
  }
  float* dx_new = scratch<float>(5, n);
  plan.run(gy, *cw.weights, dx_new, nullptr);
  parallel_for(n, n > (int64_t(1) << 18), [&](int64_t i) {
    dx[i] += dx_new[i];
  });
  return true;
}

// ∂W += (and ∂b += when `with_bias`) the weight gradient of a k×k float32 convolution, through oneDNN's direct
// backward-weights convolution reading x and ∂Y in place (no im2col rows, no patch-order partial to add back
// in canonical order), on this thread only; false (nothing done) where it has no kernel for the shape.
bool direct_backward_weights(const Layer<float>& L, const float* grad_y, bool with_bias) {
  cpu::ConvSpec spec = conv_spec(L.g, L.g.n, DType::kF32, with_bias);
  spec.pass = cpu::ConvPass::kBackwardWeights;
  const cpu::ConvPlan plan(spec);
  if (!plan.available()) return false;
  plan.accumulate_weight_gradient(L.x.data(), grad_y, grad_buffer(L.weight), with_bias ? grad_buffer(L.bias) : nullptr);
  return true;
}

}  // namespace

template <>
void backward<float>(const Layer<float>& L, const float* grad_y, const float* saved_h) {
  const Geometry& g = L.g;
  const DType t = operand_type();
  const int64_t M = g.rows, K = g.k, N = g.n, r = L.lora.rank();
  const bool want_x = needs_grad(L.x), want_w_in = needs_grad(L.weight), want_b_in = needs_grad(L.bias);
  const bool want_a = r && needs_grad(L.lora.down), want_up = r && needs_grad(L.lora.up);
  const bool want_gh = want_a;  // Gh = G·sB (m, r), for ∂A
  const Chunks ch = chunks_of(g, Pass::kBackward);
  // Weight-gradient sums: one partial per chunk, added in chunk order, when the chunks run in parallel;
  // one accumulating buffer when they run in turn on this thread (inside a batch part, or a single chunk).
  const bool serial = in_batch_part() || ch.count == 1;
  const int64_t slots = serial ? 1 : ch.count;
  FlopCounter::add(2 * M * K * N * (int64_t(want_x) + int64_t(want_w_in)) +
                   (r ? 2 * M * r * (N * (int64_t(want_up) + int64_t(want_gh)) + K * int64_t(want_a)) : 0));

  WeightOperand wd;
  PlanPair dx_plan, gh_plan;
  SumPlans dup_plan, da_plan, dw_plan;
  Operand sb_op;
  const std::vector<float> sb = r ? scaled_up(L.lora.up, L.lora.scale) : std::vector<float>();  // sB (N, r)
  const float* a = r ? L.lora.down.data() : nullptr;                                             // A (r, K), canonical
  if (r) sb_op = operand_of(sb.data(), N * r, t);
  // ∂x of a k×k convolution: one direct backward-data convolution over the whole ∂Y (with W, or W + sB·A under
  // LoRA: ∂X = G·W + (G·sB)·A = G·(W + sB·A)), added into ∂x, instead of G·W per chunk scattered by col2im.
  const bf16* grad_bf16 = nullptr;  // ∂Y (M, N) in bf16, when the backward-data convolution made it
  const bool dx_direct = want_x && g.im2col && g.conv.kernel_h * g.conv.kernel_w > 1 &&
                         direct_backward_data(L, grad_y, t, sb.data(), a, &grad_bf16);
  // ∂W (and ∂b) of a k×k float32 convolution inside a batch part: one direct backward-weights convolution over
  // the part's whole ∂Y. Only inside a part, where it runs on this thread in one fixed order; op-parallel
  // layers keep their per-chunk partials (oneDNN's own threads would split its sums by the thread count).
  // fp32 only: measured on the diffusion step (batch 64, 2 threads, Xeon with AMX) 0.303 → 0.284 s in fp32,
  // but 0.200 → 0.215 s in bf16, where the AMX GEMM on im2col rows beats oneDNN's bf16 backward-weights kernel.
  const bool dw_direct = want_w_in && t == DType::kF32 && in_batch_part() && g.im2col &&
                         g.conv.kernel_h * g.conv.kernel_w > 1 && direct_backward_weights(L, grad_y, want_b_in);
  const bool want_w = want_w_in && !dw_direct, want_b = want_b_in && !dw_direct;
  float* dx = nullptr;
  bool dx_fresh = false;
  if (want_x && !dx_direct) {
    if (r) {
      // ∂X = G·W + (G·sB)·A = G·(W + sB·A): one product with the merged weight instead of a rank-r update of
      // every row of ∂X (K = kh·kw·Cin wide for a convolution).
      if (cacheable(L.weight))
        wd.packed = merged_weight(L.weight, sb.data(), a, N, r, K, Use::kBackwardData, t);
      else
        wd.plain = merged_operand(L.weight, sb.data(), a, N, r, K, t);
    } else {
      wd = weight_operand(L.weight, N, K, Use::kBackwardData, t);
    }
    // ∂X (m, K) = G·W: straight into ∂x for a linear (written when it is x's first gradient, else added), into
    // a buffer for col2im otherwise.
    if (!g.im2col) dx = grad_buffer_to_write(L.x, &dx_fresh);
    dx_plan = plans(ch, M, [&](int64_t m) {
      return MatmulSpec{Layout::row_major(m, N, t), Layout::row_major(N, K, t), K, !g.im2col && !dx_fresh, false};
    }, wd.packed);
  }
  if (want_gh)
    gh_plan = plans(ch, M, [&](int64_t m) {
      return MatmulSpec{Layout::row_major(m, N, t), Layout::row_major(N, r, t), r, false, false};
    }, nullptr);
  // Run in turn, a linear's ∂W and ∂A (rows in canonical order) accumulate straight into their gradients;
  // other sums go to partials: one per chunk (each written whole by its chunk), or one that the chunks run in
  // turn sum into, the first writing it.
  const bool direct = serial && !g.im2col;
  auto sum_plans = [&](bool into_gradient, auto make) {  // make(m, accumulate) → MatmulSpec
    SumPlans p;
    p.rest = plans(ch, M, [&](int64_t m) { return make(m, serial); }, nullptr);
    if (serial && !into_gradient) p.first = MatmulPlan(make(std::min(ch.rows, M), false));
    return p;
  };
  if (want_up)  // Gᵀ·H (N, r)
    dup_plan = sum_plans(false, [&](int64_t m, bool acc) {
      return MatmulSpec{Layout::transposed(N, m, t, N), Layout::row_major(m, r, t), r, acc, false};
    });
  if (want_a)  // Ghᵀ·X (r, K)
    da_plan = sum_plans(direct, [&](int64_t m, bool acc) {
      return MatmulSpec{Layout::transposed(r, m, t, r), Layout::row_major(m, K, t), K, acc, false};
    });
  if (want_w)  // Gᵀ·X (N, K)
    dw_plan = sum_plans(direct, [&](int64_t m, bool acc) {
      return MatmulSpec{Layout::transposed(N, m, t, N), Layout::row_major(m, K, t), K, acc, false};
    });
  auto partials = [&](bool on, int64_t len, bool zero) {
    return on ? allocate_storage<float>(len * slots, zero) : std::shared_ptr<float>();
  };
  const auto db_part = partials(want_b, N, serial), dup_part = partials(want_up, N * r, false),
             da_part = partials(want_a && !direct, r * K, false), dw_part = partials(want_w && !direct, N * K, false);
  float* da_out = want_a ? (direct ? grad_buffer(L.lora.down) : da_part.get()) : nullptr;
  float* dw_out = want_w ? (direct ? grad_buffer(L.weight) : dw_part.get()) : nullptr;
  const Source x = (want_a || want_w) ? source_of(L.x.data(), g, t) : Source{L.x.data(), nullptr};
  if (want_x && !dx && !dx_direct) dx = grad_buffer(L.x);

  parallel_for<Schedule::kDynamic>(ch.count, !serial, [&](int64_t c) {
    const int64_t row0 = c * ch.rows, m = std::min(ch.rows, M - row0), slot = serial ? 0 : c;
    const float* gy = grad_y + row0 * N;  // (m, N)
    if (want_b) {
      float* db = db_part.get() + slot * N;
      if (!serial) std::fill(db, db + N, 0.0f);
      for (int64_t i = 0; i < m; ++i)
        for (int64_t o = 0; o < N; ++o) db[o] += gy[i * N + o];
    }
    const void* g_op = gy;
    if (grad_bf16) {  // rounded once for the whole ∂Y already (in the calling thread's slot 3: read only here)
      g_op = grad_bf16 + row0 * N;
    } else if (t == DType::kBf16) {
      bf16* gb = scratch<bf16>(3, m * N);
      cpu::to_bf16(gy, gb, m * N);
      g_op = gb;
    }
    const void* rows = (want_a || want_w) ? chunk_rows(x, g, row0, m, t) : nullptr;  // (m, K)
    if (want_up) {
      const void* h_op = saved_h + row0 * r;
      if (t == DType::kBf16) {
        bf16* hb = scratch<bf16>(2, m * r);
        cpu::to_bf16(saved_h + row0 * r, hb, m * r);
        h_op = hb;
      }
      dup_plan(c, m).run(g_op, h_op, dup_part.get() + slot * N * r);
    }
    const void* gh_op = nullptr;
    float* gh = nullptr;  // (m, r) float32
    if (want_gh) {
      gh = scratch<float>(1, m * r);
      gh_plan(m).run(g_op, sb_op.data(), gh);
      gh_op = gh;
      if (t == DType::kBf16 && want_a) {
        bf16* ghb = scratch<bf16>(4, m * r);
        cpu::to_bf16(gh, ghb, m * r);
        gh_op = ghb;
      }
    }
    if (want_a) da_plan(c, m).run(gh_op, rows, da_out + slot * r * K);
    if (want_w) dw_plan(c, m).run(g_op, rows, dw_out + slot * N * K);
    if (want_x && !dx_direct) {
      float* drows = g.im2col ? scratch<float>(5, m * K) : dx + row0 * K;  // (m, K)
      dx_plan(m).run(g_op, wd.plain.data(), drows);
      if (g.im2col) col2im_nhwc_accumulate(drows, g.conv, row0, m, dx);
    }
  });

  // Sum the partials in chunk order, times `factor`, into `total`; a single unscaled partial is used as it is
  // (inside a batch part every layer has one: no copy of ∂W per layer and part).
  auto reduce = [&](const std::shared_ptr<float>& part, int64_t len, float factor, std::vector<float>& total) {
    if (slots == 1 && factor == 1.0f) return static_cast<const float*>(part.get());
    total.resize(static_cast<size_t>(len));
    parallel_for(len, len * slots > 65536 && !serial, [&](int64_t i) {
      float s = 0.0f;
      for (int64_t c = 0; c < slots; ++c) s += part.get()[c * len + i];
      total[i] = s * factor;
    });
    return static_cast<const float*>(total.data());
  };
  std::vector<float> buf;
  if (want_b) {
    const float* db = reduce(db_part, N, 1.0f, buf);
    float* gb = grad_buffer(L.bias);
    for (int64_t o = 0; o < N; ++o) gb[o] += db[o];
  }
  if (want_up) {
    const float* du = reduce(dup_part, N * r, static_cast<float>(L.lora.scale), buf);
    float* gu = grad_buffer(L.lora.up);
    for (int64_t i = 0; i < N * r; ++i) gu[i] += du[i];
  }
  if (want_a && !direct) add_from_patch_order(reduce(da_part, r * K, 1.0f, buf), L.lora.down);
  if (want_w && !direct) add_from_patch_order(reduce(dw_part, N * K, 1.0f, buf), L.weight);
}

// ---- the double reference: whole matrices, Eigen ----

namespace {
using MatD = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

MatD rows_of(const Layer<double>& L) {
  const Geometry& g = L.g;
  MatD X(g.rows, g.k);
  if (g.im2col)
    im2col_nhwc(L.x.data(), g.conv, 0, g.rows, X.data());
  else
    std::memcpy(X.data(), L.x.data(), sizeof(double) * g.rows * g.k);
  return X;
}

MatD patch_matrix(const TensorD& w, int64_t rows, int64_t cols) {
  MatD m(rows, cols);
  to_patch_order(w, m.data());
  return m;
}
}  // namespace

template <>
void forward<double>(const Layer<double>& L, double* y, double* saved_h) {
  const Geometry& g = L.g;
  const MatD X = rows_of(L), W = patch_matrix(L.weight, g.n, g.k);
  Eigen::Map<MatD> Y(y, g.rows, g.n);
  Y.noalias() = X * W.transpose();
  if (L.bias.defined()) Y.rowwise() += Eigen::Map<const Eigen::RowVectorXd>(L.bias.data(), g.n);
  if (!L.lora.defined()) return;
  const int64_t r = L.lora.rank();
  const MatD A = patch_matrix(L.lora.down, r, g.k);
  const MatD H = X * A.transpose();
  Y.noalias() += L.lora.scale * H * Eigen::Map<const MatD>(L.lora.up.data(), g.n, r).transpose();
  if (saved_h) Eigen::Map<MatD>(saved_h, g.rows, r) = H;
}

template <>
void backward<double>(const Layer<double>& L, const double* grad_y, const double* saved_h) {
  const Geometry& g = L.g;
  const Eigen::Map<const MatD> G(grad_y, g.rows, g.n);
  const MatD X = rows_of(L), W = patch_matrix(L.weight, g.n, g.k);
  if (needs_grad(L.bias)) Eigen::Map<Eigen::RowVectorXd>(grad_buffer(L.bias), g.n) += G.colwise().sum();
  if (needs_grad(L.weight)) {
    const MatD dW = G.transpose() * X;
    add_from_patch_order(dW.data(), L.weight);
  }
  MatD dX;
  if (needs_grad(L.x)) dX = G * W;
  if (L.lora.defined()) {
    const int64_t r = L.lora.rank();
    const Eigen::Map<const MatD> H(saved_h, g.rows, r), B(L.lora.up.data(), g.n, r);
    const MatD A = patch_matrix(L.lora.down, r, g.k);
    if (needs_grad(L.lora.up)) Eigen::Map<MatD>(grad_buffer(L.lora.up), g.n, r) += L.lora.scale * G.transpose() * H;
    const MatD Gh = L.lora.scale * G * B;
    if (needs_grad(L.lora.down)) {
      const MatD dA = Gh.transpose() * X;
      add_from_patch_order(dA.data(), L.lora.down);
    }
    if (needs_grad(L.x)) dX.noalias() += Gh * A;
  }
  if (!needs_grad(L.x)) return;
  double* dx = grad_buffer(L.x);
  if (g.im2col)
    col2im_nhwc_accumulate(dX.data(), g.conv, 0, g.rows, dx);
  else
    Eigen::Map<MatD>(dx, g.rows, g.k) += dX;
}

template ConvGeometry checked_nhwc_conv_geometry<float>(const char*, const Tensor&, const Tensor&, const Tensor&,
                                                        const Conv2dOptions&);
template ConvGeometry checked_nhwc_conv_geometry<double>(const char*, const TensorD&, const TensorD&, const TensorD&,
                                                         const Conv2dOptions&);
template void im2col_nhwc<float, float>(const float*, const ConvGeometry&, int64_t, int64_t, float*);
template void im2col_nhwc<double, double>(const double*, const ConvGeometry&, int64_t, int64_t, double*);
template void im2col_nhwc<bf16, bf16>(const bf16*, const ConvGeometry&, int64_t, int64_t, bf16*);
template void col2im_nhwc_accumulate<float>(const float*, const ConvGeometry&, int64_t, int64_t, float*);
template void col2im_nhwc_accumulate<double>(const double*, const ConvGeometry&, int64_t, int64_t, double*);

}  // namespace lcd::row_gemm

namespace lcd {
int64_t keep_forward_form_only(const Tensor& weight) { return row_gemm::keep_forward_form_only_impl(weight); }

ConstantWeightsScope::ConstantWeightsScope() {
  std::lock_guard<std::mutex> lock(row_gemm::g_cache_mutex);
  if (row_gemm::g_scope_depth++ == 0) row_gemm::g_constant_scope = ++row_gemm::g_scopes_opened;
}

ConstantWeightsScope::~ConstantWeightsScope() {
  std::lock_guard<std::mutex> lock(row_gemm::g_cache_mutex);
  if (--row_gemm::g_scope_depth != 0) return;
  row_gemm::g_constant_scope = 0;
  // Their forms go now (memory as before the scope); the empty caches stay with their weights until the next
  // use, which finds them from a closed scope and starts afresh.
  for (auto& cache : row_gemm::g_scope_caches) *cache = row_gemm::PackedCache{};
  row_gemm::g_scope_caches.clear();
}

void merge_lora_ahead(const std::vector<LoraMergeSite>& sites) {
  const cpu::DType type = row_gemm::operand_type();
  FirstException error;
  // Layers handed out one at a time (each formed and packed on the thread that takes it).
  const int64_t n = static_cast<int64_t>(sites.size());
  parallel_for<Schedule::kDynamic>(n, n > 1, [&](int64_t i) {
    try {
      row_gemm::merge_ahead(sites[i], type);
    } catch (...) {
      error.capture();
    }
  });
  error.rethrow();
}

int64_t lora_forms_merged_ahead() { return row_gemm::g_forms_merged_ahead.load(); }
int64_t lora_forms_merged_on_demand() { return row_gemm::g_forms_merged_on_demand.load(); }
}  // namespace lcd
