// The machinery shared by linear, linear_lora, conv2d_nhwc and conv2d_nhwc_lora: a layer seen as one GEMM
// over rows,
//   Y (M, N) = X (M, K) · Wᵀ + b + s · (X · Aᵀ) · Bᵀ          (the LoRA branch optional, DESIGN.md §5)
// where the rows of X are the input's rows (linear; M = all leading dims, K = in) or the NHWC patches of a
// convolution (M = N·Ho·Wo output pixels, K = kh·kw·Cin, built per chunk by im2col). W is (N, K) in that
// patch order, A (r, K), B (N, r).
//
// Work is split into chunks of rows (whole samples for convolutions in backward, so that col2im of two chunks
// never touches the same input pixel; forward cuts samples larger than a chunk), handed out dynamically to the threads; each thread builds its chunk's
// rows in an L2-sized buffer (converted to bf16 when the precision is bf16) and runs single-threaded GEMMs
// on it (autograd/cpu/matmul.h). Chunk sizes depend on the shapes only, and every per-chunk partial sum of a
// weight gradient is kept apart and added in chunk order, so results do not depend on the thread count or on
// which thread ran which chunk.
//
// Backward, with G = ∂Y (M, N) and H = X·Aᵀ (saved from forward):
//   ∂b = Σ_rows G,   ∂B = s·Gᵀ·H,   Gh = s·G·B (M, r),   ∂A = Ghᵀ·X,   ∂W = Gᵀ·X (only if W is trainable),
//   ∂X = G·W + Gh·A  → added into ∂x directly (linear) or through col2im (convolution).
// Float tensors compute in the process precision (autograd/cpu/precision.h); double tensors (gradient checks)
// run the same chunks with Eigen GEMMs in double.
#pragma once
#include <Eigen/Core>
#include <memory>
#include <vector>

#include "autograd/cpu/matmul.h"
#include "autograd/cpu/precision.h"
#include "autograd/ops.h"
#include "autograd/ops/kernels.h"

namespace lcd::row_gemm {

// The shapes of one layer call.
struct Geometry {
  int64_t rows = 0;             // M
  int64_t k = 0;                // K, the length of a row of X
  int64_t n = 0;                // N, output features
  int64_t rows_per_sample = 1;  // Ho·Wo for convolutions: backward's chunks hold whole samples
  bool im2col = false;          // rows are patches of an NHWC image (else X's rows are the input's rows)
  ConvGeometry conv{};          // when im2col: the NHWC input (batch, channels = Cin, height, width, ...)
};

// The optional LoRA branch: down A (r, K) and up B (N, r) in patch order, scale s.
template <typename T>
struct Lora {
  TensorT<T> down, up;  // undefined: no branch
  double scale = 0.0;
  bool defined() const { return down.defined(); }
  int64_t rank() const { return down.defined() ? down.size(0) : 0; }
};

// One layer call: its inputs (weights in their canonical shapes) and geometry.
template <typename T>
struct Layer {
  const TensorT<T>& x;
  const TensorT<T>& weight;  // (N, in) or (Cout, Cin, kh, kw)
  const TensorT<T>& bias;    // (N) or undefined
  const Lora<T>& lora;       // factors in their canonical shapes ((r, in) / (r, Cin, kh, kw) and (N, r[, 1, 1]))
  Geometry g;
};

// Benchmarks can watch the layer shapes the float forward runs (bench/ceiling_bench.cpp); null: off.
using LayerObserver = void (*)(const Geometry& g);
void observe_layers(LayerObserver observer);

// Forward; when `saved_h` is given, H = X·Aᵀ (M, r) is written there for backward.
template <typename T>
void forward(const Layer<T>& layer, T* y, T* saved_h);

// Backward: accumulates into the gradient buffers of whichever of x, weight, bias, down, up need one.
template <typename T>
void backward(const Layer<T>& layer, const T* grad_y, const T* saved_h);

// The NHWC patch-order conv geometry of x (N, H, W, Cin) under weight (Cout, Cin, kh, kw), checked.
template <typename T>
ConvGeometry checked_nhwc_conv_geometry(const char* op, const TensorT<T>& x, const TensorT<T>& weight,
                                        const TensorT<T>& bias, const Conv2dOptions& options);

// Patch-order (kh, kw, Cin) rows of the output pixels [row0, row0 + m) of an NHWC image; the adjoint adds
// rows back into dx.
template <typename In, typename Out>
void im2col_nhwc(const In* x, const ConvGeometry& g, int64_t row0, int64_t m, Out* rows);
template <typename T>
void col2im_nhwc_accumulate(const T* rows, const ConvGeometry& g, int64_t row0, int64_t m, T* dx);

}  // namespace lcd::row_gemm
