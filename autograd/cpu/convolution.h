// Direct convolutions for the forward of k×k (k > 1) NHWC layers: oneDNN's convolution primitive (JIT
// brgconv on AVX-512 / AVX512-BF16 / AMX, jit:avx2 below), which reads the image in place instead of
// building im2col rows. Measured on the AMD EPYC Zen 5 (2 threads, 3×3 layers of the SD UNet and VAE):
// 380–410 GFLOP/s fp32 and 750–830 bf16, against 240–290 / 320–590 for im2col + matmul.
//
// Results do not depend on the thread count: the forward kernels split the output among threads and each
// output element's sum runs inside one thread in a fixed order (test RowGemmKernels.DirectConvolutionResultsDoNotDependOnTheThreadCount).
// Plans are cached per shape; the weights are reordered once into the layout the plan asks for (ConvWeights)
// and may be kept by the caller. Only kernels that read NHWC directly are used; where oneDNN offers none
// for a shape (`available()` false), callers keep the im2col path.
#pragma once
#include <cstdint>
#include <memory>

#include "autograd/cpu/matmul.h"

namespace lcd::cpu {

// y (batch, out_h, out_w, out_channels) = conv(x (batch, height, width, channels)) [+ bias], float32 output.
struct ConvSpec {
  int64_t batch, height, width, channels, out_channels;
  int64_t kernel_h, kernel_w, stride, padding;  // padding at the start of each axis
  int64_t out_h, out_w;                         // the end padding follows from these
  DType type;                                   // of x and the weights
  bool bias;
};

class ConvWeights;

class ConvPlan {
 public:
  explicit ConvPlan(const ConvSpec& spec);
  bool available() const;  // false: no direct NHWC kernel for this shape here
  // With oneDNN's own threads outside an OpenMP region, on the calling thread inside one.
  void run(const void* x, const ConvWeights& w, float* y, const float* bias) const;
  const char* kernel() const;
  struct Impl;

 private:
  std::shared_ptr<const Impl> impl_;
  friend class ConvWeights;
};

// Weights (out_channels, channels, kh, kw) in float32, canonical (OIHW) or patch order (OHWI), reordered
// for `plan` (in its operand type); other plans of the same shape get their own layout on first use.
class ConvWeights {
 public:
  enum class Order { kOIHW, kOHWI };
  ConvWeights(const float* w, Order order, const ConvPlan& plan);
  ~ConvWeights();
  ConvWeights(const ConvWeights&) = delete;
  ConvWeights& operator=(const ConvWeights&) = delete;
  struct Impl;
  Impl& impl() const { return *impl_; }

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace lcd::cpu
