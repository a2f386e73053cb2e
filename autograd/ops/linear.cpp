// linear: y (..., out) = x (..., in) · Wᵀ + b, W (out, in), b (out) optional.
// ∂L/∂x = G W, ∂L/∂W = Gᵀ X, ∂L/∂b = Σ_rows G; a frozen W gets no GEMM in backward.
#include "autograd/errors.h"
#include "autograd/flop_counter.h"
#include "autograd/gemm.h"
#include "autograd/op_registry.h"
#include "autograd/ops.h"
#include "autograd/ops/instantiate.h"

namespace lcd {
LCD_DIFFERENTIABLE_OP(linear);

template <typename T>
static TensorT<T> linear_forward(const TensorT<T>& x, const TensorT<T>& w, const TensorT<T>& b) {
  const int64_t in = w.size(1), out = w.size(0), rows = x.numel() / in;
  FlopCounter::add(2 * rows * in * out);
  std::vector<int64_t> dims = x.shape().to_vector();
  dims.back() = out;
  // Start from the bias rows (in parallel) and accumulate the GEMM onto them (see conv2d.cpp).
  auto y = TensorT<T>::empty(Shape(dims));
  T* yp = y.data();
  const T* bp = b.defined() ? b.data() : nullptr;
#pragma omp parallel for schedule(static) if (rows * out > 32768)
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t o = 0; o < out; ++o) yp[r * out + o] = bp ? bp[o] : T(0);
  gemm(y.matrix(rows, out), x.matrix(rows, in), w.matrix(out, in).transpose(), true);
  return y;
}

template <typename T>
static void linear_backward(const TensorT<T>& grad, const TensorT<T>& x, const TensorT<T>& w, const TensorT<T>& b) {
  const int64_t in = w.size(1), out = w.size(0), rows = x.numel() / in;
  auto g = grad.matrix(rows, out);
  if (needs_grad(x)) gemm(MatrixMap<T>(grad_buffer(x), rows, in), g, w.matrix(out, in), true);
  if (needs_grad(w)) gemm(MatrixMap<T>(grad_buffer(w), out, in), g.transpose(), x.matrix(rows, in), true);
  if (needs_grad(b)) Eigen::Map<Eigen::Matrix<T, 1, Eigen::Dynamic>>(grad_buffer(b), out) += g.colwise().sum();
}

template <typename T>
TensorT<T> linear(const TensorT<T>& x, const TensorT<T>& weight, const TensorT<T>& bias) {
  if (weight.ndim() != 2 || x.ndim() < 1 || x.size(-1) != weight.size(1))
    throw ShapeError("linear: input " + x.shape().str() + " does not fit weight " + weight.shape().str());
  if (bias.defined() && (bias.ndim() != 1 || bias.size(0) != weight.size(0)))
    throw ShapeError("linear: bias " + bias.shape().str() + " does not fit weight " + weight.shape().str());
  TensorT<T> y = linear_forward(x, weight, bias);
  if (should_record<T>({&x, &weight, &bias}))
    record<T>(y, "linear", {&x, &weight, &bias},
              [x, weight, bias](const TensorT<T>& g) { linear_backward(g, x, weight, bias); });
  return y;
}

#define INSTANTIATE(T) template TensorT<T> linear<T>(const TensorT<T>&, const TensorT<T>&, const TensorT<T>&);
LCD_FOR_EACH_SCALAR(INSTANTIATE)
}  // namespace lcd
