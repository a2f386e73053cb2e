// TensorT<T>: a contiguous float32 (or, for gradient checks, float64) tensor with reverse-mode autograd.
// A tensor is a handle to a TensorImpl; copies share data. Ops that record on the tape live in autograd/ops/.
#pragma once
#include <Eigen/Core>
#include <functional>
#include <memory>
#include <vector>

#include "autograd/shape.h"
#include "autograd/storage.h"

namespace lcd {

template <typename T>
class TensorT;
template <typename T>
struct Node;

template <typename T>
struct TensorImpl {
  Shape shape;
  std::shared_ptr<T> data;  // numel() elements, possibly aliasing a larger buffer
  bool requires_grad = false;
  std::shared_ptr<T> grad;         // allocated on first accumulation (or bound to a flat buffer)
  std::shared_ptr<Node<T>> node;   // the op that produced this tensor; null for leaves
  // Kernel-side copies of this tensor's values (packed GEMM weights, autograd/ops/row_gemm.cpp), kept only
  // for `packable` tensors (module parameters: written through their own data() or not at all) and valid
  // while `version` is unchanged: every non-const data() access to them counts as a write and bumps it. Tensors
  // written through other aliases (flat optimiser buffers, EMA copies) are never packable.
  bool packable = false;
  uint64_t version = 0;
  std::shared_ptr<void> kernel_cache;
  ~TensorImpl();                   // tears the graph down iteratively (autograd/tape.cpp)
};

template <typename T>
using MatrixMap = Eigen::Map<Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>, Eigen::Unaligned>;
template <typename T>
using ConstMatrixMap =
    Eigen::Map<const Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>, Eigen::Unaligned>;

template <typename T>
class TensorT {
 public:
  using Scalar = T;

  TensorT() = default;  // an undefined tensor (defined() is false)

  static TensorT empty(const Shape& shape);                 // uninitialised
  static TensorT zeros(const Shape& shape);
  static TensorT full(const Shape& shape, T value);
  static TensorT from_vector(const Shape& shape, const std::vector<T>& values);
  // A tensor over existing storage (no copy); `data` must hold shape.numel() elements.
  static TensorT from_storage(const Shape& shape, std::shared_ptr<T> data);

  bool defined() const { return impl_ != nullptr; }
  const Shape& shape() const { return impl_->shape; }
  int ndim() const { return impl_->shape.rank(); }
  int64_t size(int axis) const { return impl_->shape.size(axis); }
  int64_t numel() const { return impl_->shape.numel(); }
  T* data() {  // counts as a write to a packable tensor: invalidates its kernel-side copies (kernel_cache)
    if (impl_->packable) ++impl_->version;  // only parameters, so activations in parallel loops never share a counter
    return impl_->data.get();
  }
  const T* data() const { return impl_->data.get(); }
  const std::shared_ptr<T>& storage() const { return impl_->data; }
  T item() const;  // the single value of a one-element tensor

  // Gradient tracking. A leaf with requires_grad collects .grad(); a frozen leaf has no gradient buffer.
  bool requires_grad() const { return impl_ && impl_->requires_grad; }
  TensorT& set_requires_grad(bool on);
  bool has_grad() const { return impl_ && impl_->grad != nullptr; }
  TensorT grad() const;  // the accumulated gradient as a tensor over the same buffer; undefined if none
  void zero_grad();
  bool is_leaf() const { return impl_ && impl_->node == nullptr; }
  // Reverse pass from this tensor (which must hold one element), seeding d(this)/d(this) = 1.
  void backward() const;

  TensorT detach() const;  // same data, no graph
  TensorT clone() const;   // new data, no graph
  void copy_from(const TensorT& other);  // in place, shapes must match; not recorded on the tape

  // Row-major matrix views for GEMMs (rows * cols must equal numel()).
  MatrixMap<T> matrix(int64_t rows, int64_t cols);
  ConstMatrixMap<T> matrix(int64_t rows, int64_t cols) const;

  const std::shared_ptr<TensorImpl<T>>& impl() const { return impl_; }
  explicit TensorT(std::shared_ptr<TensorImpl<T>> impl) : impl_(std::move(impl)) {}

 private:
  std::shared_ptr<TensorImpl<T>> impl_;
};

using Tensor = TensorT<float>;
using TensorD = TensorT<double>;

// Copies values between scalar types (used by gradient checks and file I/O).
template <typename To, typename From>
TensorT<To> cast(const TensorT<From>& x);

// Throws ShapeError naming `what` when x's shape is not `expected`.
template <typename T>
void check_shape(const TensorT<T>& x, const Shape& expected, const char* what);

}  // namespace lcd
