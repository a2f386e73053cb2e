// UNet2DConditionModel (diffusers unet_2d_condition.py) for the supported subset of its config.
#pragma once
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "infer/nn/embeddings.h"
#include "infer/nn/unet_blocks.h"

namespace lcd {

struct UNetConfig {
  int64_t in_channels = 4, out_channels = 4;
  std::vector<std::string> down_block_types, up_block_types;
  std::vector<int64_t> block_out_channels;
  int layers_per_block = 2;
  std::vector<int> heads;  // per down block (diffusers: num_attention_heads, or attention_head_dim when that is null)
  int64_t cross_attention_dim = 64;
  int norm_num_groups = 32;
  double norm_eps = 1e-5;
  bool use_linear_projection = false;
  int downsample_padding = 1;
  bool flip_sin_to_cos = true;
  double freq_shift = 0;
  int64_t sample_size = 8;  // latent height and width the model was trained at
  int64_t time_cond_proj_dim = 0;  // width of the guidance embedding fed to time_embedding.cond_proj; 0: none
  nlohmann::json raw;  // the config as read, written back on save

  // Validates strictly (config_check.h); `origin` names the file in errors.
  static UNetConfig from_json(const nlohmann::json& j, const std::string& origin);
  // Range checks (ConfigError naming the field); from_json calls it.
  void validate(const std::string& origin) const;
};

class UNet2DConditionModel : public Module {
 public:
  explicit UNet2DConditionModel(const UNetConfig& config);
  // sample (B, C, H, W), timesteps (B) (may differ per sample), context (B, L, cross_attention_dim) → (B, out, H, W)
  // timestep_cond (B, time_cond_proj_dim): the guidance embedding of a guidance-conditioned model (diffusers'
  // timestep_cond); undefined skips cond_proj. Without a tape, large batches run batch-parallel
  // (autograd/batch_parallel.h).
  Tensor forward(const Tensor& sample, const std::vector<double>& timesteps, const Tensor& context,
                 const Tensor& timestep_cond = Tensor()) const;
  // Classifier-free guidance's two passes in one: the same sample (B, C, H, W) and timesteps under the conditions
  // `first` and `second` (B, L, cross_attention_dim) → (2B, out, H, W), rows [0, B) under `first`, as
  // forward(concat(sample, sample), timesteps twice, concat(first, second)) computes them. The layers before the
  // first cross-attention read no condition, so they run once per sample and the rows double there.
  Tensor forward_pair(const Tensor& sample, const std::vector<double>& timesteps, const Tensor& first,
                      const Tensor& second) const;
  // Makes a guidance-conditioned model of this one: time_embedding.cond_proj with zero weights, so that it still
  // computes the same function; time_cond_proj_dim is set in config and config.raw.
  void add_time_cond_proj(int64_t dim);

  UNetConfig config;
  TimestepEmbedding time_embedding;
  Conv2d conv_in;
  ModuleList<DownBlock> down_blocks;
  std::unique_ptr<MidBlockCrossAttn> mid_block;
  ModuleList<UpBlock> up_blocks;
  GroupNorm conv_norm_out;
  Conv2d conv_out;

 private:
  void check_inputs(const Tensor& sample, const std::vector<double>& timesteps, const Tensor& context,
                    const Tensor& timestep_cond) const;
  // context (B, L, D), or (2B, L, D) for forward_pair's rows
  Tensor forward_unsplit(const Tensor& sample, const std::vector<double>& timesteps, const Tensor& context,
                         const Tensor& timestep_cond) const;
};

}  // namespace lcd
