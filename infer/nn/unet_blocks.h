// The UNet's down, mid and up blocks (diffusers unet_2d_blocks.py): CrossAttnDownBlock2D / DownBlock2D
// (one class, attention optional), UNetMidBlock2DCrossAttn, CrossAttnUpBlock2D / UpBlock2D (one class).
// In a forward_pair (unet.h) temb and the skips made before the first cross-attention hold each sample once:
// the blocks pair their rows (pair_rows) where they meet the doubled hidden state.
#pragma once
#include <memory>
#include <vector>

#include "infer/nn/attention.h"
#include "infer/nn/resnet.h"

namespace lcd {

struct BlockSettings {
  int64_t temb_channels;
  int groups;
  double eps;
  int heads;                 // attention heads (cross-attention blocks)
  int64_t cross_dim;
  bool use_linear_projection;
};

class DownBlock : public Module {
 public:
  DownBlock(int64_t in, int64_t out, int layers, bool with_attention, bool add_downsample, int downsample_padding,
            const BlockSettings& s);
  // Appends each layer's output (and the downsampled one) to `skips`; returns the block's output.
  Tensor forward(Tensor h, const Tensor& temb, const Tensor& context, std::vector<Tensor>* skips) const;
  ModuleList<ResnetBlock2D> resnets;
  ModuleList<Transformer2DModel> attentions;
  ModuleList<Downsample2D> downsamplers;
};

class MidBlockCrossAttn : public Module {
 public:
  MidBlockCrossAttn(int64_t channels, const BlockSettings& s);
  Tensor forward(const Tensor& h, const Tensor& temb, const Tensor& context) const;
  ModuleList<ResnetBlock2D> resnets;
  ModuleList<Transformer2DModel> attentions;
};

class UpBlock : public Module {
 public:
  // in: channels of the matching down block's input; prev_out: channels coming from below.
  UpBlock(int64_t in, int64_t out, int64_t prev_out, int layers, bool with_attention, bool add_upsample,
          const BlockSettings& s);
  // Consumes skips from the back (one per layer), concatenating each on the channel axis.
  Tensor forward(Tensor h, const Tensor& temb, const Tensor& context, std::vector<Tensor>* skips) const;
  ModuleList<ResnetBlock2D> resnets;
  ModuleList<Transformer2DModel> attentions;
  ModuleList<Upsample2D> upsamplers;
};

}  // namespace lcd
