// matmul: Y (M,N) = A (M,K) · B (K,N). ∂L/∂A = G Bᵀ, ∂L/∂B = Aᵀ G.
#include "autograd/errors.h"
#include "autograd/flop_counter.h"
#include "autograd/gemm.h"
#include "autograd/op_registry.h"
#include "autograd/ops.h"
#include "autograd/ops/instantiate.h"

namespace lcd {
LCD_DIFFERENTIABLE_OP(matmul);

template <typename T>
static void check_matmul_shapes(const TensorT<T>& a, const TensorT<T>& b) {
  if (a.ndim() != 2 || b.ndim() != 2 || a.size(1) != b.size(0))
    throw ShapeError("matmul: cannot multiply " + a.shape().str() + " by " + b.shape().str());
}

template <typename T>
static TensorT<T> matmul_forward(const TensorT<T>& a, const TensorT<T>& b) {
  const int64_t m = a.size(0), k = a.size(1), n = b.size(1);
  FlopCounter::add(2 * m * k * n);
  auto y = TensorT<T>::empty({m, n});
  gemm(y.matrix(m, n), a.matrix(m, k), b.matrix(k, n), false);
  return y;
}

template <typename T>
static void matmul_backward(const TensorT<T>& grad, const TensorT<T>& a, const TensorT<T>& b) {
  const int64_t m = a.size(0), k = a.size(1), n = b.size(1);
  auto g = grad.matrix(m, n);
  if (needs_grad(a)) gemm(MatrixMap<T>(grad_buffer(a), m, k), g, b.matrix(k, n).transpose(), true);
  if (needs_grad(b)) gemm(MatrixMap<T>(grad_buffer(b), k, n), a.matrix(m, k).transpose(), g, true);
}

template <typename T>
TensorT<T> matmul(const TensorT<T>& a, const TensorT<T>& b) {
  check_matmul_shapes(a, b);
  TensorT<T> y = matmul_forward(a, b);
  if (should_record<T>({&a, &b}))
    record<T>(y, "matmul", {&a, &b}, [a, b](const TensorT<T>& g) { matmul_backward(g, a, b); });
  return y;
}

#define INSTANTIATE(T) template TensorT<T> matmul<T>(const TensorT<T>&, const TensorT<T>&);
LCD_FOR_EACH_SCALAR(INSTANTIATE)
}  // namespace lcd
