// TensorT: construction, views, gradient accessors.
#include "autograd/tensor.h"

#include <cstring>

#include "autograd/errors.h"
#include "autograd/tape.h"

namespace lcd {

template <typename T>
TensorT<T> TensorT<T>::empty(const Shape& shape) {
  auto impl = std::make_shared<TensorImpl<T>>();
  impl->shape = shape;
  impl->data = allocate_storage<T>(shape.numel(), false);
  return TensorT(std::move(impl));
}

template <typename T>
TensorT<T> TensorT<T>::zeros(const Shape& shape) {
  auto impl = std::make_shared<TensorImpl<T>>();
  impl->shape = shape;
  impl->data = allocate_storage<T>(shape.numel(), true);
  return TensorT(std::move(impl));
}

template <typename T>
TensorT<T> TensorT<T>::full(const Shape& shape, T value) {
  TensorT t = empty(shape);
  std::fill(t.data(), t.data() + t.numel(), value);
  return t;
}

template <typename T>
TensorT<T> TensorT<T>::from_vector(const Shape& shape, const std::vector<T>& values) {
  if (static_cast<int64_t>(values.size()) != shape.numel())
    throw ShapeError("from_vector: " + std::to_string(values.size()) + " values for shape " + shape.str());
  TensorT t = empty(shape);
  std::copy(values.begin(), values.end(), t.data());
  return t;
}

template <typename T>
TensorT<T> TensorT<T>::from_storage(const Shape& shape, std::shared_ptr<T> data) {
  auto impl = std::make_shared<TensorImpl<T>>();
  impl->shape = shape;
  impl->data = std::move(data);
  return TensorT(std::move(impl));
}

template <typename T>
T TensorT<T>::item() const {
  if (numel() != 1) throw ShapeError("item() needs a one-element tensor, got shape " + shape().str());
  return data()[0];
}

template <typename T>
TensorT<T>& TensorT<T>::set_requires_grad(bool on) {
  if (!is_leaf()) throw AutogradError("set_requires_grad on a non-leaf tensor");
  impl_->requires_grad = on;
  if (!on) impl_->grad.reset();
  return *this;
}

template <typename T>
TensorT<T> TensorT<T>::grad() const {
  if (!has_grad()) return TensorT();
  return from_storage(shape(), impl_->grad);
}

template <typename T>
void TensorT<T>::zero_grad() {
  if (has_grad()) std::memset(impl_->grad.get(), 0, sizeof(T) * numel());
}

template <typename T>
void TensorT<T>::backward() const {
  if (numel() != 1) throw AutogradError("backward() needs a one-element tensor, got shape " + shape().str());
  run_backward(*this, full(shape(), T(1)));
}

template <typename T>
TensorT<T> TensorT<T>::detach() const {
  return from_storage(shape(), impl_->data);
}

template <typename T>
TensorT<T> TensorT<T>::clone() const {
  TensorT t = empty(shape());
  std::memcpy(t.data(), data(), sizeof(T) * numel());
  return t;
}

template <typename T>
void TensorT<T>::copy_from(const TensorT& other) {
  check_shape(other, shape(), "copy_from source");
  std::memcpy(data(), other.data(), sizeof(T) * numel());
}

template <typename T>
MatrixMap<T> TensorT<T>::matrix(int64_t rows, int64_t cols) {
  if (rows * cols != numel())
    throw ShapeError("matrix view " + std::to_string(rows) + "x" + std::to_string(cols) + " of shape " + shape().str());
  return MatrixMap<T>(data(), rows, cols);
}

template <typename T>
ConstMatrixMap<T> TensorT<T>::matrix(int64_t rows, int64_t cols) const {
  if (rows * cols != numel())
    throw ShapeError("matrix view " + std::to_string(rows) + "x" + std::to_string(cols) + " of shape " + shape().str());
  return ConstMatrixMap<T>(data(), rows, cols);
}

template <typename To, typename From>
TensorT<To> cast(const TensorT<From>& x) {
  auto y = TensorT<To>::empty(x.shape());
  for (int64_t i = 0; i < x.numel(); ++i) y.data()[i] = static_cast<To>(x.data()[i]);
  return y;
}

template <typename T>
void check_shape(const TensorT<T>& x, const Shape& expected, const char* what) {
  if (!x.defined()) throw ShapeError(std::string(what) + ": tensor is undefined, expected shape " + expected.str());
  if (x.shape() != expected)
    throw ShapeError(std::string(what) + ": expected shape " + expected.str() + ", got " + x.shape().str());
}

template class TensorT<float>;
template class TensorT<double>;
template TensorT<double> cast<double, float>(const TensorT<float>&);
template TensorT<float> cast<float, double>(const TensorT<double>&);
template TensorT<float> cast<float, float>(const TensorT<float>&);
template TensorT<double> cast<double, double>(const TensorT<double>&);
template void check_shape<float>(const TensorT<float>&, const Shape&, const char*);
template void check_shape<double>(const TensorT<double>&, const Shape&, const char*);

}  // namespace lcd
