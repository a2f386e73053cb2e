// The GEMM engine of the float kernels: oneDNN's matmul (JIT brgemm kernels for AMX-BF16, AVX512-BF16,
// AVX-512 and AVX2, chosen by oneDNN at run time from the CPU) behind a small plan/run interface.
//
// Why oneDNN and this shape of interface (measured on a 2-core Xeon with AMX at the UNet's shapes, data in
// memory): oneDNN's matmul runs fp32 at ~125–135 and bf16 at ~370–640 GFLOP/s per thread; called with both
// threads on one product it loses ~25% to the split and the fork/join of every call, so lcdkit's kernels
// give each thread its own chunk of rows and run single-threaded products on it (the calling thread's
// oneDNN work stays on that thread inside an OpenMP region).
//
// A plan is made once per shape before a parallel loop (primitive creation costs milliseconds; plans are
// cached), then run from any thread with new pointers: no allocation, reorder or primitive creation
// happens in the loop. Weights are packed once into the kernels' preferred layout (PackedMatrix).
// Debugging switches: LCDKIT_PRINT_PLANS=1 prints every new plan and its kernel, LCDKIT_PROFILE_PLANS=1 the
// time spent per plan at exit, with the median call.
#pragma once
#include <cstdint>
#include <memory>

namespace lcd::cpu {

using bf16 = uint16_t;
enum class DType { kF32, kBf16 };

// Element (i, j) of a rows × cols matrix sits at data[i·row_stride + j·col_stride].
struct Layout {
  int64_t rows, cols, row_stride, col_stride;
  DType type;
  static Layout row_major(int64_t rows, int64_t cols, DType type, int64_t ld = 0) {
    return {rows, cols, ld ? ld : cols, 1, type};
  }
  // The transpose of a row-major (cols × rows) matrix with leading dimension ld.
  static Layout transposed(int64_t rows, int64_t cols, DType type, int64_t ld = 0) {
    return {rows, cols, 1, ld ? ld : rows, type};
  }
};

// A right-hand operand (k × n) copied once into oneDNN's preferred blocked layout, in its own precision.
// Built single-threaded; read by plans from any thread.
class PackedMatrix {
 public:
  // Copies b (elements of `b_layout`, float32 or bf16 as the layout says) converted to `type`.
  PackedMatrix(const void* b, const Layout& b_layout, DType type);
  ~PackedMatrix();
  PackedMatrix(const PackedMatrix&) = delete;
  PackedMatrix& operator=(const PackedMatrix&) = delete;
  int64_t rows() const;
  int64_t cols() const;
  DType type() const;
  struct Impl;
  Impl& impl() const { return *impl_; }

 private:
  std::unique_ptr<Impl> impl_;
};

// C (m × n, float32, row-major with leading dimension ldc) = A·B [+ bias] [+ C if accumulate].
struct MatmulSpec {
  Layout a;  // m × k
  Layout b;  // k × n (ignored when a PackedMatrix is given)
  int64_t ldc = 0;  // 0: n
  bool accumulate = false;
  bool bias = false;  // a float32 row vector of n added to every row
};

class MatmulPlan {
 public:
  MatmulPlan() = default;
  // For a plain B (its layout in spec.b).
  explicit MatmulPlan(const MatmulSpec& spec);
  // For a packed B; the plan keeps a reference to `b`, which must outlive it.
  MatmulPlan(const MatmulSpec& spec, const PackedMatrix& b);
  // On the calling thread only (never oneDNN's own threads). b is ignored (may be null) for a packed plan;
  // bias only when spec.bias.
  void run(const void* a, const void* b, float* c, const float* bias = nullptr) const;
  bool defined() const { return impl_ != nullptr; }
  const char* kernel() const;  // oneDNN's implementation name, e.g. "brg:avx512_core_amx_bf16"
  struct Impl;

 private:
  const Impl* impl_ = nullptr;  // in the process-wide plan table (plan_cache.h)
  // The packed variant's oneDNN memory (owned by the PackedMatrix), when planned with one. Read-only
  // arguments can be shared by threads; only the per-thread memories are re-pointed at each run.
  void* packed_ = nullptr;
};

}  // namespace lcd::cpu
