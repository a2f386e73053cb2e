// embedding: gathers rows of a table (V, D) by index → (n, D). ∂L/∂table[i] = Σ of g's rows that read row i.
#include <cstring>

#include "autograd/errors.h"
#include "autograd/op_registry.h"
#include "autograd/ops.h"
#include "autograd/ops/instantiate.h"

namespace lcd {
LCD_DIFFERENTIABLE_OP(embedding);

template <typename T>
static TensorT<T> embedding_forward(const TensorT<T>& table, const std::vector<int64_t>& indices) {
  const int64_t row = table.numel() / table.size(0);
  std::vector<int64_t> dims = table.shape().to_vector();
  dims[0] = static_cast<int64_t>(indices.size());
  auto y = TensorT<T>::empty(Shape(dims));
  for (size_t i = 0; i < indices.size(); ++i)
    std::memcpy(y.data() + i * row, table.data() + indices[i] * row, sizeof(T) * row);
  return y;
}

template <typename T>
static void embedding_backward(const TensorT<T>& grad, const TensorT<T>& table, const std::vector<int64_t>& indices) {
  const int64_t row = table.numel() / table.size(0);
  T* gt = grad_buffer(table);
  for (size_t i = 0; i < indices.size(); ++i)  // serial: repeated indices accumulate in a fixed order
    for (int64_t k = 0; k < row; ++k) gt[indices[i] * row + k] += grad.data()[i * row + k];
}

template <typename T>
TensorT<T> embedding(const TensorT<T>& table, const std::vector<int64_t>& indices) {
  if (table.ndim() < 1) throw ShapeError("embedding: table must have at least one axis");
  for (int64_t i : indices)
    if (i < 0 || i >= table.size(0))
      throw ShapeError("embedding: index " + std::to_string(i) + " out of range for table " + table.shape().str());
  TensorT<T> y = embedding_forward(table, indices);
  if (should_record<T>({&table}))
    record<T>(y, "embedding", {&table},
              [table, indices](const TensorT<T>& g) { embedding_backward(g, table, indices); });
  return y;
}

#define INSTANTIATE(T) template TensorT<T> embedding<T>(const TensorT<T>&, const std::vector<int64_t>&);
LCD_FOR_EACH_SCALAR(INSTANTIATE)
}  // namespace lcd
