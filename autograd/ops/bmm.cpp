// bmm: Y[b] (M,N) = A[b] (M,K) · B[b] (K,N) for each batch b. ∂L/∂A[b] = G[b] B[b]ᵀ, ∂L/∂B[b] = A[b]ᵀ G[b].
#include "autograd/errors.h"
#include "autograd/flop_counter.h"
#include "autograd/op_registry.h"
#include "autograd/ops.h"
#include "autograd/ops/instantiate.h"
#include "autograd/parallel.h"

namespace lcd {
LCD_DIFFERENTIABLE_OP(bmm);

template <typename T>
static TensorT<T> bmm_forward(const TensorT<T>& a, const TensorT<T>& b) {
  const int64_t batch = a.size(0), m = a.size(1), k = a.size(2), n = b.size(2);
  auto y = TensorT<T>::empty({batch, m, n});
  FlopCounter::add(2 * batch * m * k * n);
  const T* ap = a.data();
  const T* bp = b.data();
  T* yp = y.data();
  parallel_for(batch, batch > 1, [&](int64_t i) {
    MatrixMap<T>(yp + i * m * n, m, n).noalias() =
        ConstMatrixMap<T>(ap + i * m * k, m, k) * ConstMatrixMap<T>(bp + i * k * n, k, n);
  });
  return y;
}

template <typename T>
static void bmm_backward(const TensorT<T>& grad, const TensorT<T>& a, const TensorT<T>& b) {
  const int64_t batch = a.size(0), m = a.size(1), k = a.size(2), n = b.size(2);
  const T* gp = grad.data();
  const T* ap = a.data();
  const T* bp = b.data();
  T* ga = needs_grad(a) ? grad_buffer(a) : nullptr;
  T* gb = needs_grad(b) ? grad_buffer(b) : nullptr;
  parallel_for(batch, batch > 1, [&](int64_t i) {
    ConstMatrixMap<T> g(gp + i * m * n, m, n);
    if (ga) MatrixMap<T>(ga + i * m * k, m, k).noalias() += g * ConstMatrixMap<T>(bp + i * k * n, k, n).transpose();
    if (gb) MatrixMap<T>(gb + i * k * n, k, n).noalias() += ConstMatrixMap<T>(ap + i * m * k, m, k).transpose() * g;
  });
}

template <typename T>
TensorT<T> bmm(const TensorT<T>& a, const TensorT<T>& b) {
  if (a.ndim() != 3 || b.ndim() != 3 || a.size(0) != b.size(0) || a.size(2) != b.size(1))
    throw ShapeError("bmm: cannot multiply " + a.shape().str() + " by " + b.shape().str());
  TensorT<T> y = bmm_forward(a, b);
  if (should_record<T>({&a, &b}))
    record<T>(y, "bmm", {&a, &b}, [a, b](const TensorT<T>& g) { bmm_backward(g, a, b); });
  return y;
}

#define INSTANTIATE(T) template TensorT<T> bmm<T>(const TensorT<T>&, const TensorT<T>&);
LCD_FOR_EACH_SCALAR(INSTANTIATE)
}  // namespace lcd
