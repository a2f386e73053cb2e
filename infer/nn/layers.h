// Basic layers with diffusers' parameter names: Linear, Conv2d, GroupNorm, LayerNorm. Inside the models,
// image activations are channels-last, (N, H, W, C): the layout the GEMM kernels and fused norms read
// contiguously (autograd/ops/row_gemm.h); the models convert from and to diffusers' NCHW at their entry and
// exit only.
#pragma once
#include "autograd/ops.h"
#include "infer/nn/module.h"

#include <vector>

namespace lcd {

// An unmerged LoRA branch on a Linear or Conv2d (DESIGN.md §5): y = W x + scale · B(A x).
// Linear: down A (r, in), up B (out, r). Conv k×k: down is a conv (r, in, k, k) with the base stride and
// padding, up a 1×1 conv (out, r, 1, 1).
struct LoraBranch {
  Tensor down, up;
  double scale = 1.0;
};

// The one interface of the layers LoRA can target (Module::lora_layer() finds them).
class LoraLayer : public Module {
 public:
  LoraLayer* lora_layer() override { return this; }
  const LoraLayer* lora_layer() const override { return this; }
  virtual const char* kind() const = 0;                  // "Linear" or "Conv2d", for messages
  virtual Shape lora_down_shape(int64_t rank) const = 0;  // (r, in) or (r, in, k, k)
  virtual Shape lora_up_shape(int64_t rank) const = 0;    // (out, r) or (out, r, 1, 1)

  Tensor weight, bias;             // diffusers' shapes; bias may be undefined
  std::vector<LoraBranch> lora;    // unmerged branches, the first fused into the layer's kernel
};

class Linear : public LoraLayer {
 public:
  Linear(int64_t in, int64_t out, bool bias = true);
  Tensor forward(const Tensor& x) const;  // (..., in) → (..., out), plus any LoRA branches
  const char* kind() const override { return "Linear"; }
  Shape lora_down_shape(int64_t rank) const override { return {rank, in_features}; }
  Shape lora_up_shape(int64_t rank) const override { return {out_features, rank}; }
  int64_t in_features, out_features;
};

class Conv2d : public LoraLayer {
 public:
  Conv2d(int64_t in, int64_t out, int kernel, int stride = 1, int padding = 0, bool bias = true);
  Tensor forward(const Tensor& x) const;  // (N, H, W, in) → (N, Ho, Wo, out), plus any LoRA branches
  const char* kind() const override { return "Conv2d"; }
  Shape lora_down_shape(int64_t rank) const override { return {rank, in_channels, kernel, kernel}; }
  Shape lora_up_shape(int64_t rank) const override { return {out_channels, rank, 1, 1}; }
  int64_t in_channels, out_channels;
  int kernel;
  Conv2dOptions options;
};

// For forward-only use at the process precision (lcm-sample): the weight of every Linear and Conv2d of
// `model` without unmerged LoRA branches keeps only its kernels' forward form and frees its float values
// (autograd/inference_weights.h). The model can then run forwards only. Returns the bytes freed.
int64_t keep_forward_forms_only(Module& model);

class GroupNorm : public Module {
 public:
  GroupNorm(int groups, int64_t channels, double eps);
  // x (N, ..., C) channels-last; with `then_silu`, SiLU in the same pass.
  Tensor forward(const Tensor& x, bool then_silu = false) const;
  int groups;
  double eps;
  Tensor weight, bias;  // (C), (C)
};

class LayerNorm : public Module {
 public:
  LayerNorm(int64_t dim, double eps);
  Tensor forward(const Tensor& x) const;
  double eps;
  Tensor weight, bias;  // (D), (D)
};

}  // namespace lcd
