// Direct convolutions for k×k (k > 1) NHWC layers, forward, backward-data and backward-weights: oneDNN's convolution primitives
// (JIT brgconv / jit kernels on AVX-512 / AVX512-BF16 / AMX, jit:avx2 below), which read the image (or ∂y) in
// place instead of building im2col rows (or scattering them back with col2im). Measured on the AMD EPYC Zen 5
// (2 threads): forward at the SD UNet's and VAE's 3×3 layers 380–410 GFLOP/s fp32 and 750–830 bf16, against
// 240–290 / 320–590 for im2col + matmul; backward-data at the Fashion-MNIST UNet's 300–400 / 750–860.
//
// Results do not depend on the thread count: the kernels split the output among threads and each output
// element's sum runs inside one thread in a fixed order (test RowGemmKernels.DirectConvolutionResultsDoNotDependOnTheThreadCount).
// Plans are cached per shape; the weights are reordered once into the layout the plan asks for (ConvWeights)
// and may be kept by the caller. Only kernels that read NHWC directly are used; where oneDNN offers none
// for a shape (`available()` false), callers keep the im2col path. LCDKIT_NO_DIRECT_CONV=1 (debugging, A/B
// timing) makes every plan unavailable.
#pragma once
#include <cstdint>
#include <memory>

#include "autograd/cpu/matmul.h"

namespace lcd::cpu {

// Forward: y (batch, out_h, out_w, out_channels) = conv(x (batch, height, width, channels)) [+ bias].
// Backward-data: ∂x (batch, height, width, channels) = convᵀ(∂y (batch, out_h, out_w, out_channels)).
// Backward-weights: ∂W (out_channels, channels, kh, kw) += Σ over pixels of ∂y ⊗ x's patches, and ∂b += Σ ∂y.
// Outputs are float32; the input and the weights (or ∂y) are of `type`.
enum class ConvPass { kForward, kBackwardData, kBackwardWeights };
struct ConvSpec {
  int64_t batch, height, width, channels, out_channels;
  int64_t kernel_h, kernel_w, stride, padding;  // padding at the start of each axis
  int64_t out_h, out_w;                         // the end padding follows from these
  DType type;                                   // of the input (x, or ∂y) and the weights
  bool bias;                                    // forward only
  ConvPass pass = ConvPass::kForward;
};

class ConvWeights;

// fp32 forwards of 3×3 stride-1 layers with 32 channels or more, on images of min_pixels or more, run as
// Winograd F(4×4, 3×3) where oneDNN has it, in bands of rows of at most band_pixel_channels each.
// Measured on the Xeon with AMX, 2 threads, reorders included: 1.6–2.5× the direct kernel at SD's VAE
// layers from 128² to 512², and 16-row bands of a 512² × 256-channel layer at 2.3× (in one band, its
// scratchpad held the whole transformed image, 1.2 GB, and it ran at half the direct kernel's speed). Below
// 128², the weights' one-time transform (20–70 ms a layer, made on first use) outweighs what one or a few
// calls gain (lcm-sample decodes once; SD's UNet at 64² gained nothing end to end and held 0.3 GB more), and
// at the Fashion-MNIST UNet's 4² and 8² layers it was no faster in the step.
struct WinogradLimits {
  int64_t min_pixels = 128 * 128;
  int64_t band_pixel_channels = int64_t(1) << 21;
};
// Plans made afterwards use these (tests lower them to run Winograd and its bands on small images).
void set_winograd_limits(const WinogradLimits& limits);

class ConvPlan {
 public:
  explicit ConvPlan(const ConvSpec& spec);
  bool available() const;  // false: no direct NHWC kernel for this shape here
  // Forward: in = x, out = y; backward-data: in = ∂y, out = ∂x (overwritten), bias null. With oneDNN's own
  // threads outside an OpenMP region, on the calling thread inside one.
  void run(const void* in, const ConvWeights& w, float* out, const float* bias) const;
  // Backward-weights plans: grad_w (canonical OIHW, float32) += ∂W of x (batch, H, W, Cin) and grad_y
  // (batch, Ho, Wo, Cout), and grad_b += Σ grad_y when spec.bias. Always on the calling thread alone, so its
  // sums over pixels run in one order whatever the thread count (callers use it inside a batch part).
  void accumulate_weight_gradient(const void* x, const void* grad_y, float* grad_w, float* grad_b) const;
  const char* kernel() const;
  struct Impl;

 private:
  const Impl* impl_ = nullptr;  // in the process-wide plan table (plan_cache.h)
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
