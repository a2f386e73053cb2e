// geglu: the gated GELU of diffusers' FeedForward, on the (..., 2·inner) output of its projection:
//   a = p[..., :inner], b = p[..., inner:],  y = a · gelu(b)   (exact erf GELU)
// in one pass (no chunk copies, no separate gelu tensor). ∂a = g·gelu(b), ∂b = g·a·gelu'(b).
#include <omp.h>

#include <vector>

#include "autograd/errors.h"
#include "autograd/op_registry.h"
#include "autograd/ops.h"
#include "autograd/ops/instantiate.h"
#include "autograd/ops/vector_math.h"

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
#pragma omp parallel for schedule(static) if (y.numel() > 32768)
  for (int64_t r = 0; r < rows; ++r)
    vm::map2(pp + r * 2 * inner, pp + r * 2 * inner + inner, yp + r * inner, inner,
             [](const auto& a, const auto& b) { return a * vm::gelu(b); });
  return y;
}

template <typename T>
static void geglu_backward(const TensorT<T>& grad, const TensorT<T>& p, int64_t rows, int64_t inner) {
  const T* gp = grad.data();
  const T* pp = p.data();
  T* dp = grad_buffer(p);
#pragma omp parallel for schedule(static) if (grad.numel() > 32768)
  for (int64_t r = 0; r < rows; ++r) {
    const T* a = pp + r * 2 * inner;
    const T* b = a + inner;
    const T* g = gp + r * inner;
    thread_local std::vector<T> tmp;
    tmp.resize(2 * inner);
    vm::map2(g, b, tmp.data(), inner, [](const auto& gv, const auto& bv) { return gv * vm::gelu(bv); });
    vm::map2(g, b, tmp.data() + inner, inner, [](const auto& gv, const auto& bv) { return gv * vm::gelu_grad(bv); });
    T* da = dp + r * 2 * inner;
    T* db = da + inner;
    for (int64_t i = 0; i < inner; ++i) {
      da[i] += tmp[i];
      db[i] += tmp[inner + i] * a[i];
    }
  }
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
