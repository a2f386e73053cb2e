// AutoencoderKL (diffusers autoencoder_kl.py / vae.py): Encoder, Decoder, quant convs, diagonal Gaussian posterior.
#pragma once
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "infer/nn/attention.h"
#include "infer/nn/resnet.h"

namespace lcd {

struct AutoencoderConfig {
  int64_t in_channels = 1, out_channels = 1, latent_channels = 4;
  std::vector<int64_t> block_out_channels;
  int layers_per_block = 1;
  int norm_num_groups = 32;
  double scaling_factor = 0.18215;
  int64_t sample_size = 32;  // image height and width
  nlohmann::json raw;
  static AutoencoderConfig from_json(const nlohmann::json& j, const std::string& origin);
};

// UNetMidBlock2D without time embedding: resnet → spatial self-attention → resnet.
class VaeMidBlock : public Module {
 public:
  VaeMidBlock(int64_t channels, int groups);
  Tensor forward(const Tensor& x) const;
  ModuleList<ResnetBlock2D> resnets;
  ModuleList<SpatialSelfAttention> attentions;
};

// DownEncoderBlock2D / UpDecoderBlock2D: resnets, then an optional down/upsampler.
class VaeDownBlock : public Module {
 public:
  VaeDownBlock(int64_t in, int64_t out, int layers, bool add_downsample, int groups);
  Tensor forward(Tensor h) const;
  ModuleList<ResnetBlock2D> resnets;
  ModuleList<Downsample2D> downsamplers;
};
class VaeUpBlock : public Module {
 public:
  VaeUpBlock(int64_t in, int64_t out, int layers, bool add_upsample, int groups);
  Tensor forward(Tensor h) const;
  ModuleList<ResnetBlock2D> resnets;
  ModuleList<Upsample2D> upsamplers;
};

class VaeEncoder : public Module {
 public:
  explicit VaeEncoder(const AutoencoderConfig& c);
  Tensor forward(const Tensor& x) const;  // (N, H, W, in) → (N, h, w, 2·latent), channels-last
  Conv2d conv_in;
  ModuleList<VaeDownBlock> down_blocks;
  VaeMidBlock mid_block;
  GroupNorm conv_norm_out;
  Conv2d conv_out;
};

class VaeDecoder : public Module {
 public:
  explicit VaeDecoder(const AutoencoderConfig& c);
  Tensor forward(const Tensor& z) const;  // (N, h, w, latent) → (N, H, W, out), channels-last
  Conv2d conv_in;
  VaeMidBlock mid_block;
  ModuleList<VaeUpBlock> up_blocks;
  GroupNorm conv_norm_out;
  Conv2d conv_out;
};

// The posterior N(mean, exp(logvar)) per latent element; logvar clamped to [−30, 20] as diffusers does.
struct DiagonalGaussian {
  Tensor mean, logvar;  // (N, latent, h, w)
  Tensor mode() const { return mean; }
  Tensor sample(std::mt19937_64& rng) const;  // mean + exp(logvar/2)·ε
  Tensor kl() const;                          // (N): ½ Σ (mean² + var − 1 − logvar)
};

class AutoencoderKL : public Module {
 public:
  explicit AutoencoderKL(const AutoencoderConfig& config);
  DiagonalGaussian encode(const Tensor& x) const;  // images in [-1, 1]
  Tensor decode(const Tensor& z) const;            // unscaled latents (divide by scaling_factor first)
  AutoencoderConfig config;
  VaeEncoder encoder;
  VaeDecoder decoder;
  Conv2d quant_conv, post_quant_conv;
};

}  // namespace lcd
