// ResnetBlock2D, Downsample2D and Upsample2D as diffusers defines them (resnet.py, downsampling.py,
// upsampling.py), for the default configuration: pre-norm, SiLU, time_embedding_norm "default",
// output_scale_factor 1.
#pragma once
#include <memory>

#include "infer/nn/layers.h"

namespace lcd {

class ResnetBlock2D : public Module {
 public:
  // temb_channels 0: no time embedding (the autoencoder's blocks).
  ResnetBlock2D(int64_t in, int64_t out, int64_t temb_channels, int groups, double eps);
  // x (N, H, W, in), temb (N, temb_channels) or undefined → (N, H, W, out):
  //   h = conv1(silu(norm1(x))) + time_emb_proj(silu(temb)); h = conv2(silu(norm2(h))); out = shortcut(x) + h
  Tensor forward(const Tensor& x, const Tensor& temb) const;

  GroupNorm norm1;
  Conv2d conv1;
  std::unique_ptr<Linear> time_emb_proj;
  GroupNorm norm2;
  Conv2d conv2;
  std::unique_ptr<Conv2d> conv_shortcut;  // 1×1, only when in ≠ out
};

// A stride-2 3×3 convolution; padding 0 means one zero row/column at the bottom/right (diffusers' F.pad).
class Downsample2D : public Module {
 public:
  Downsample2D(int64_t channels, int padding);
  Tensor forward(const Tensor& x) const;
  Conv2d conv;
};

// Nearest 2× upsampling followed by a 3×3 convolution.
class Upsample2D : public Module {
 public:
  explicit Upsample2D(int64_t channels);
  Tensor forward(const Tensor& x) const;
  Conv2d conv;
};

}  // namespace lcd
