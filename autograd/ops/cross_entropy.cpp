// cross_entropy: L = −mean_n log softmax(z_n)[y_n] for logits (N, K). ∂L/∂z_n = (softmax(z_n) − onehot(y_n))/N·g.
#include <cmath>

#include "autograd/errors.h"
#include "autograd/op_registry.h"
#include "autograd/ops.h"
#include "autograd/ops/instantiate.h"
#include "autograd/ops/kernels.h"

namespace lcd {
LCD_DIFFERENTIABLE_OP(cross_entropy);

template <typename T>
static TensorT<T> cross_entropy_forward(const TensorT<T>& logits, const std::vector<int64_t>& labels,
                                        TensorT<T>* probs) {
  const int64_t n = logits.size(0), k = logits.size(1);
  *probs = TensorT<T>::empty(logits.shape());
  softmax_rows(logits.data(), probs->data(), n, k);
  double acc = 0;
  for (int64_t i = 0; i < n; ++i) acc -= std::log(std::max<double>(probs->data()[i * k + labels[i]], 1e-300));
  return TensorT<T>::full(Shape{}, static_cast<T>(acc / n));
}

template <typename T>
static void cross_entropy_backward(const TensorT<T>& grad, const TensorT<T>& logits, const TensorT<T>& probs,
                                   const std::vector<int64_t>& labels) {
  const int64_t n = logits.size(0), k = logits.size(1);
  const T scale = grad.item() / T(n);
  T* gz = grad_buffer(logits);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < k; ++j)
      gz[i * k + j] += scale * (probs.data()[i * k + j] - (j == labels[i] ? T(1) : T(0)));
}

template <typename T>
TensorT<T> cross_entropy(const TensorT<T>& logits, const std::vector<int64_t>& labels) {
  if (logits.ndim() != 2 || logits.size(0) != static_cast<int64_t>(labels.size()))
    throw ShapeError("cross_entropy: logits " + logits.shape().str() + " for " + std::to_string(labels.size()) +
                     " labels");
  for (int64_t y : labels)
    if (y < 0 || y >= logits.size(1)) throw ValueError("cross_entropy: label " + std::to_string(y) + " out of range");
  TensorT<T> probs;
  TensorT<T> y = cross_entropy_forward(logits, labels, &probs);
  if (should_record<T>({&logits}))
    record<T>(y, "cross_entropy", {&logits},
              [logits, probs, labels](const TensorT<T>& g) { cross_entropy_backward(g, logits, probs, labels); });
  return y;
}

#define INSTANTIATE(T) template TensorT<T> cross_entropy<T>(const TensorT<T>&, const std::vector<int64_t>&);
LCD_FOR_EACH_SCALAR(INSTANTIATE)
}  // namespace lcd
