// Shape: the dimensions of a contiguous tensor, rank 0..5, stored inline (no heap allocation).
#pragma once
#include <array>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <vector>

namespace lcd {

class Shape {
 public:
  static constexpr int kMaxRank = 5;

  Shape() = default;
  Shape(std::initializer_list<int64_t> dims);
  explicit Shape(const std::vector<int64_t>& dims);

  int rank() const { return rank_; }
  int64_t numel() const;
  int64_t operator[](int axis) const { return dims_[axis]; }
  int64_t& operator[](int axis) { return dims_[axis]; }
  // Size along `axis`, which may be negative (counting from the end); throws ShapeError when out of range.
  int64_t size(int axis) const;
  // Turns a possibly negative axis into 0..rank-1; throws ShapeError when out of range.
  int normalize_axis(int axis) const;
  std::vector<int64_t> to_vector() const;
  std::string str() const;  // "(2, 4, 8, 8)"

  bool operator==(const Shape& other) const;
  bool operator!=(const Shape& other) const { return !(*this == other); }

 private:
  void check_rank(size_t rank) const;
  std::array<int64_t, kMaxRank> dims_{};
  int rank_ = 0;
};

// Row-major strides of a shape, in elements.
std::array<int64_t, Shape::kMaxRank> contiguous_strides(const Shape& shape);

}  // namespace lcd
