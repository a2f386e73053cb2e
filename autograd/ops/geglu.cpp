// geglu: the gated GELU of diffusers' FeedForward, on the (..., 2·inner) output of its projection:
//   a = p[..., :inner], b = p[..., inner:],  y = a · gelu(b)   (exact erf GELU)
// in one pass (no chunk copies, no separate gelu tensor). ∂a = g·gelu(b), ∂b = g·a·gelu'(b).
#include <omp.h>

#include <algorithm>

#include "autograd/errors.h"
#include "autograd/op_registry.h"
#include "autograd/ops.h"
#include "autograd/ops/instantiate.h"
#include "autograd/ops/vector_math.h"
#include "autograd/parallel.h"

namespace lcd {
LCD_DIFFERENTIABLE_OP(geglu);

namespace vm = vector_math;

template <typename T>
static TensorT<T> geglu_forward(const TensorT<T>& p, int64_t rows, int64_t inner) {
  std::vector<int64_t> dims = p.shape().to_vector();
  dims.back() = inner;
  auto y = TensorT<T>::empty(Shape(dims));
  const T* pp = p.data();
  T* yp = y.data();
  parallel_for(rows, y.numel() > 32768, [&](int64_t r) {
    vm::map2(pp + r * 2 * inner, pp + r * 2 * inner + inner, yp + r * inner, inner,
             [](const auto& a, const auto& b) { return a * vm::gelu(b); });
  });
  return y;
}

// One row: ∂a = g·gelu(b) and ∂b = (g·gelu'(b))·a, with Φ(b) (one erf) shared by both, written into fresh
// gradient rows or added into existing ones.
static void geglu_backward_row(const float* g, const float* a, const float* b, float* da, float* db, int64_t n,
                               bool fresh) {
  using P = vm::FloatPacket;
  namespace ei = vm::ei;
  constexpr int64_t lanes = vm::kLanes;
  const P half = ei::pset1<P>(0.5f), one = ei::pset1<P>(1.0f), inv_sqrt2 = ei::pset1<P>(float(vm::kInvSqrt2));
  const P inv_sqrt2pi = ei::pset1<P>(float(vm::kInvSqrt2Pi)), minus_half = ei::pset1<P>(-0.5f);
  auto step = [&](const P& gv, const P& av, const P& bv, P& da_v, P& db_v) {
    const P erf1 = ei::padd(one, ei::perf(ei::pmul(bv, inv_sqrt2)));                 // 1 + erf(b/√2)
    const P gelu = ei::pmul(ei::pmul(half, bv), erf1);                                  // as vm::gelu
    const P pdf = ei::pmul(inv_sqrt2pi, ei::pexp(ei::pmul(minus_half, ei::pmul(bv, bv))));
    const P gelu_grad = ei::padd(ei::pmul(half, erf1), ei::pmul(bv, pdf));              // as vm::gelu_grad
    da_v = ei::pmul(gv, gelu);
    db_v = ei::pmul(ei::pmul(gv, gelu_grad), av);
  };
  int64_t i = 0;
  for (; i + lanes <= n; i += lanes) {
    P dav, dbv;
    step(ei::ploadu<P>(g + i), ei::ploadu<P>(a + i), ei::ploadu<P>(b + i), dav, dbv);
    ei::pstoreu(da + i, fresh ? dav : ei::padd(ei::ploadu<P>(da + i), dav));
    ei::pstoreu(db + i, fresh ? dbv : ei::padd(ei::ploadu<P>(db + i), dbv));
  }
  if (i == n) return;
  alignas(64) float pg[lanes] = {}, pa[lanes] = {}, pb[lanes] = {}, oa[lanes], ob[lanes];
  std::copy(g + i, g + n, pg);
  std::copy(a + i, a + n, pa);
  std::copy(b + i, b + n, pb);
  P dav, dbv;
  step(ei::pload<P>(pg), ei::pload<P>(pa), ei::pload<P>(pb), dav, dbv);
  ei::pstore(oa, dav);
  ei::pstore(ob, dbv);
  for (int64_t j = 0; j < n - i; ++j) {
    da[i + j] = fresh ? oa[j] : da[i + j] + oa[j];
    db[i + j] = fresh ? ob[j] : db[i + j] + ob[j];
  }
}

static void geglu_backward_row(const double* g, const double* a, const double* b, double* da, double* db, int64_t n,
                               bool fresh) {
  for (int64_t i = 0; i < n; ++i) {
    const double dav = g[i] * vm::gelu(b[i]), dbv = g[i] * vm::gelu_grad(b[i]) * a[i];
    da[i] = fresh ? dav : da[i] + dav;
    db[i] = fresh ? dbv : db[i] + dbv;
  }
}

template <typename T>
static void geglu_backward(const TensorT<T>& grad, const TensorT<T>& p, int64_t rows, int64_t inner) {
  const T* gp = grad.data();
  const T* pp = p.data();
  bool fresh = false;
  T* dp = grad_buffer_to_write(p, &fresh);  // p's first gradient: written, no zero fill
  parallel_for(rows, grad.numel() > 32768, [&](int64_t r) {
    const T* a = pp + r * 2 * inner;
    T* da = dp + r * 2 * inner;
    geglu_backward_row(gp + r * inner, a, a + inner, da, da + inner, inner, fresh);
  });
}

template <typename T>
TensorT<T> geglu(const TensorT<T>& p) {
  if (p.ndim() < 1 || p.size(-1) % 2 != 0)
    throw ShapeError("geglu: the last axis of " + p.shape().str() + " is not even (value and gate halves)");
  const int64_t inner = p.size(-1) / 2, rows = p.numel() / std::max<int64_t>(2 * inner, 1);
  TensorT<T> y = geglu_forward(p, rows, inner);
  if (should_record<T>({&p}))
    record<T>(y, "geglu", {&p}, [p, rows, inner](const TensorT<T>& g) { geglu_backward(g, p, rows, inner); });
  return y;
}

#define INSTANTIATE(T) template TensorT<T> geglu<T>(const TensorT<T>&);
LCD_FOR_EACH_SCALAR(INSTANTIATE)
}  // namespace lcd
