// Shape: construction, validation and printing.
#include "autograd/shape.h"

#include <sstream>

#include "autograd/errors.h"

namespace lcd {

void Shape::check_rank(size_t rank) const {
  if (rank > static_cast<size_t>(kMaxRank))
    throw ShapeError("tensor rank " + std::to_string(rank) + " exceeds the maximum of " + std::to_string(kMaxRank));
}

Shape::Shape(std::initializer_list<int64_t> dims) {
  check_rank(dims.size());
  for (int64_t d : dims) {
    if (d < 0) throw ShapeError("negative dimension " + std::to_string(d));
    dims_[rank_++] = d;
  }
}

Shape::Shape(const std::vector<int64_t>& dims) {
  check_rank(dims.size());
  for (int64_t d : dims) {
    if (d < 0) throw ShapeError("negative dimension " + std::to_string(d));
    dims_[rank_++] = d;
  }
}

int64_t Shape::numel() const {
  int64_t n = 1;
  for (int i = 0; i < rank_; ++i) n *= dims_[i];
  return n;
}

int Shape::normalize_axis(int axis) const {
  int a = axis < 0 ? axis + rank_ : axis;
  if (a < 0 || a >= rank_) throw ShapeError("axis " + std::to_string(axis) + " out of range for shape " + str());
  return a;
}

int64_t Shape::size(int axis) const { return dims_[normalize_axis(axis)]; }

std::vector<int64_t> Shape::to_vector() const { return std::vector<int64_t>(dims_.begin(), dims_.begin() + rank_); }

std::string Shape::str() const {
  std::ostringstream out;
  out << "(";
  for (int i = 0; i < rank_; ++i) out << (i ? ", " : "") << dims_[i];
  out << ")";
  return out.str();
}

bool Shape::operator==(const Shape& other) const {
  if (rank_ != other.rank_) return false;
  for (int i = 0; i < rank_; ++i)
    if (dims_[i] != other.dims_[i]) return false;
  return true;
}

std::array<int64_t, Shape::kMaxRank> contiguous_strides(const Shape& shape) {
  std::array<int64_t, Shape::kMaxRank> strides{};
  int64_t s = 1;
  for (int i = shape.rank() - 1; i >= 0; --i) {
    strides[i] = s;
    s *= shape[i];
  }
  return strides;
}

}  // namespace lcd
