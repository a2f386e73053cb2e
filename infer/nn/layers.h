// Basic layers with diffusers' parameter names: Linear, Conv2d, GroupNorm, LayerNorm.
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

class Linear : public Module {
 public:
  Linear(int64_t in, int64_t out, bool bias = true);
  Tensor forward(const Tensor& x) const;  // (..., in) → (..., out), plus any LoRA branches
  int64_t in_features, out_features;
  Tensor weight, bias;  // (out, in), (out) or undefined
  std::vector<LoraBranch> lora;
};

class Conv2d : public Module {
 public:
  Conv2d(int64_t in, int64_t out, int kernel, int stride = 1, int padding = 0, bool bias = true);
  Tensor forward(const Tensor& x) const;  // (N, in, H, W) → (N, out, Ho, Wo), plus any LoRA branches
  int64_t in_channels, out_channels;
  int kernel;
  Conv2dOptions options;
  Tensor weight, bias;  // (out, in, k, k), (out)
  std::vector<LoraBranch> lora;
};

class GroupNorm : public Module {
 public:
  GroupNorm(int groups, int64_t channels, double eps);
  Tensor forward(const Tensor& x) const;
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
