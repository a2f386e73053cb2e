// UNet2DConditionModel: config parsing and the forward pass (see unet.h).
#include "infer/nn/unet.h"

#include <cmath>

#include "autograd/batch_parallel.h"
#include "autograd/errors.h"
#include "infer/nn/config_check.h"

namespace lcd {

using json = nlohmann::json;

UNetConfig UNetConfig::from_json(const json& j, const std::string& origin) {
  ConfigRules rules;
  rules.used = {"in_channels", "out_channels", "down_block_types", "up_block_types", "block_out_channels",
                "layers_per_block", "attention_head_dim", "num_attention_heads", "cross_attention_dim",
                "norm_num_groups", "norm_eps", "use_linear_projection", "downsample_padding", "flip_sin_to_cos",
                "freq_shift", "mid_block_type", "sample_size", "time_cond_proj_dim"};
  rules.free = {"dropout", "upcast_attention", "addition_embed_type_num_heads"};
  rules.must_equal = {
      {"act_fn", "silu"}, {"addition_embed_type", nullptr}, {"addition_time_embed_dim", nullptr},
      {"attention_type", "default"}, {"center_input_sample", false}, {"class_embed_type", nullptr},
      {"class_embeddings_concat", false}, {"conv_in_kernel", 3}, {"conv_out_kernel", 3},
      {"cross_attention_norm", nullptr}, {"dual_cross_attention", false}, {"encoder_hid_dim", nullptr},
      {"encoder_hid_dim_type", nullptr}, {"mid_block_only_cross_attention", nullptr}, {"mid_block_scale_factor", 1},
      {"num_class_embeds", nullptr}, {"only_cross_attention", false},
      {"projection_class_embeddings_input_dim", nullptr}, {"resnet_out_scale_factor", 1.0},
      {"resnet_skip_time_act", false}, {"resnet_time_scale_shift", "default"},
      {"reverse_transformer_layers_per_block", nullptr},
      {"time_embedding_act_fn", nullptr}, {"time_embedding_dim", nullptr}, {"time_embedding_type", "positional"},
      {"timestep_post_act", nullptr}, {"transformer_layers_per_block", 1}};
  check_config_fields(j, rules, origin);

  auto field = [&](const char* key, const auto& fallback) { return config_field(j, key, fallback, origin); };
  UNetConfig c;
  c.raw = j;
  c.in_channels = field("in_channels", c.in_channels);
  c.out_channels = field("out_channels", c.out_channels);
  c.down_block_types = field("down_block_types", std::vector<std::string>{});
  c.up_block_types = field("up_block_types", std::vector<std::string>{});
  c.block_out_channels = field("block_out_channels", std::vector<int64_t>{});
  c.layers_per_block = field("layers_per_block", c.layers_per_block);
  c.cross_attention_dim = field("cross_attention_dim", c.cross_attention_dim);
  c.norm_num_groups = field("norm_num_groups", c.norm_num_groups);
  c.norm_eps = field("norm_eps", c.norm_eps);
  c.use_linear_projection = field("use_linear_projection", c.use_linear_projection);
  c.downsample_padding = field("downsample_padding", c.downsample_padding);
  c.flip_sin_to_cos = field("flip_sin_to_cos", c.flip_sin_to_cos);
  c.freq_shift = field("freq_shift", c.freq_shift);
  if (j.contains("time_cond_proj_dim") && !j["time_cond_proj_dim"].is_null())
    c.time_cond_proj_dim = field("time_cond_proj_dim", c.time_cond_proj_dim);
  const std::string mid = field("mid_block_type", std::string("UNetMidBlock2DCrossAttn"));
  if (mid != "UNetMidBlock2DCrossAttn")
    throw ConfigError(origin + ": unsupported field \"mid_block_type\" = \"" + mid + "\"");

  const size_t n = c.block_out_channels.size();
  if (n == 0 || c.down_block_types.size() != n || c.up_block_types.size() != n)
    throw ConfigError(origin + ": block_out_channels, down_block_types and up_block_types must have the same, "
                      "non-zero length");
  for (const auto& t : c.down_block_types)
    if (t != "CrossAttnDownBlock2D" && t != "DownBlock2D")
      throw ConfigError(origin + ": unsupported down block type \"" + t + "\"");
  for (const auto& t : c.up_block_types)
    if (t != "CrossAttnUpBlock2D" && t != "UpBlock2D") throw ConfigError(origin + ": unsupported up block type \"" + t + "\"");
  // diffusers' naming quirk: num_attention_heads defaults to attention_head_dim, which then means heads.
  const json heads = j.contains("num_attention_heads") && !j["num_attention_heads"].is_null() ? j["num_attention_heads"]
                     : j.contains("attention_head_dim") ? j["attention_head_dim"] : json(8);
  auto head_count = [&](const json& h) {
    if (!h.is_number_integer() || h.get<int64_t>() < 1 || h.get<int64_t>() > 4096)
      throw ConfigError(origin + ": attention heads " + heads.dump() + ": each must be an integer 1..4096");
    return h.get<int>();
  };
  if (heads.is_number()) {
    c.heads.assign(n, head_count(heads));
  } else if (heads.is_array() && heads.size() == n) {
    for (const auto& h : heads) c.heads.push_back(head_count(h));
  } else {
    throw ConfigError(origin + ": attention heads " + heads.dump() + " must be an int or one per block");
  }
  c.sample_size = field("sample_size", c.sample_size);
  c.validate(origin);
  return c;
}

// Every value the builder and the kernels divide by or allocate from, checked once here with the field named.
void UNetConfig::validate(const std::string& origin) const {
  auto fail = [&](const std::string& key, const std::string& value, const std::string& why) {
    return ConfigError(origin + ": field \"" + key + "\" = " + value + ": " + why);
  };
  constexpr int64_t kMaxChannels = 1 << 16;
  auto channels = [&](const char* key, int64_t v) {
    if (v < 1 || v > kMaxChannels) throw fail(key, std::to_string(v), "must be 1.." + std::to_string(kMaxChannels));
  };
  channels("in_channels", in_channels);
  channels("out_channels", out_channels);
  channels("cross_attention_dim", cross_attention_dim);
  if (time_cond_proj_dim < 0 || time_cond_proj_dim == 1 || time_cond_proj_dim > 4096)
    throw fail("time_cond_proj_dim", std::to_string(time_cond_proj_dim), "must be null or 2..4096");
  if (layers_per_block < 1 || layers_per_block > 64) throw fail("layers_per_block", std::to_string(layers_per_block), "must be 1..64");
  if (norm_num_groups < 1) throw fail("norm_num_groups", std::to_string(norm_num_groups), "must be ≥ 1");
  if (!(norm_eps > 0) || !std::isfinite(norm_eps)) throw fail("norm_eps", std::to_string(norm_eps), "must be a finite number > 0");
  if (!std::isfinite(freq_shift)) throw fail("freq_shift", std::to_string(freq_shift), "must be finite");
  if (downsample_padding < 0 || downsample_padding > 1)
    throw fail("downsample_padding", std::to_string(downsample_padding), "must be 0 or 1");
  if (block_out_channels.size() > 8) throw fail("block_out_channels", std::to_string(block_out_channels.size()) + " blocks", "at most 8");
  for (size_t i = 0; i < block_out_channels.size(); ++i) {
    const int64_t ch = block_out_channels[i];
    const std::string key = "block_out_channels[" + std::to_string(i) + "]";
    channels(key.c_str(), ch);
    // 4·C (time embedding) and GEGLU's 8·C must not overflow; C and 2·C… need GroupNorm groups to divide them.
    if (ch % norm_num_groups != 0)
      throw fail(key, std::to_string(ch), "must be a multiple of norm_num_groups " + std::to_string(norm_num_groups));
    if (heads[i] < 1) throw fail("attention_head_dim", std::to_string(heads[i]), "the number of heads must be ≥ 1");
    if (ch % heads[i] != 0)
      throw fail("attention_head_dim", std::to_string(heads[i]), "must divide " + key + " = " + std::to_string(ch));
  }
  const int64_t factor = int64_t{1} << (block_out_channels.size() - 1);
  if (sample_size < 1 || sample_size > 4096 || sample_size % factor != 0)
    throw fail("sample_size", std::to_string(sample_size),
               "must be 1..4096 and a multiple of " + std::to_string(factor) + " (one halving per down block)");
}

UNet2DConditionModel::UNet2DConditionModel(const UNetConfig& cfg)
    : config(cfg),
      time_embedding(cfg.block_out_channels[0], cfg.block_out_channels[0] * 4),
      conv_in(cfg.in_channels, cfg.block_out_channels[0], 3, 1, 1),
      conv_norm_out(cfg.norm_num_groups, cfg.block_out_channels[0], cfg.norm_eps),
      conv_out(cfg.block_out_channels[0], cfg.out_channels, 3, 1, 1) {
  const auto& boc = cfg.block_out_channels;
  const size_t n = boc.size();
  BlockSettings s{boc[0] * 4, cfg.norm_num_groups, cfg.norm_eps, 0, cfg.cross_attention_dim, cfg.use_linear_projection};
  register_module("conv_in", &conv_in);
  register_module("time_embedding", &time_embedding);
  if (cfg.time_cond_proj_dim > 0) time_embedding.add_cond_proj(cfg.time_cond_proj_dim);
  int64_t out = boc[0];
  for (size_t i = 0; i < n; ++i) {
    const int64_t in = out;
    out = boc[i];
    s.heads = cfg.heads[i];
    down_blocks.add(std::make_unique<DownBlock>(in, out, cfg.layers_per_block,
                                                cfg.down_block_types[i] == "CrossAttnDownBlock2D", i + 1 < n,
                                                cfg.downsample_padding, s));
  }
  register_module("down_blocks", &down_blocks);
  s.heads = cfg.heads.back();
  mid_block = std::make_unique<MidBlockCrossAttn>(boc.back(), s);
  register_module("mid_block", mid_block.get());
  out = boc.back();
  for (size_t i = 0; i < n; ++i) {
    const int64_t prev_out = out;
    out = boc[n - 1 - i];
    const int64_t in = boc[std::max<int64_t>(static_cast<int64_t>(n) - 2 - static_cast<int64_t>(i), 0)];
    s.heads = cfg.heads[n - 1 - i];
    up_blocks.add(std::make_unique<UpBlock>(in, out, prev_out, cfg.layers_per_block + 1,
                                            cfg.up_block_types[i] == "CrossAttnUpBlock2D", i + 1 < n, s));
  }
  register_module("up_blocks", &up_blocks);
  register_module("conv_norm_out", &conv_norm_out);
  register_module("conv_out", &conv_out);
}

void UNet2DConditionModel::add_time_cond_proj(int64_t dim) {
  if (config.time_cond_proj_dim > 0)
    throw ConfigError("the UNet already has time_cond_proj_dim " + std::to_string(config.time_cond_proj_dim));
  if (dim < 2 || dim > 4096) throw ConfigError("time_cond_proj_dim " + std::to_string(dim) + " must be 2..4096");
  time_embedding.add_cond_proj(dim);
  config.time_cond_proj_dim = dim;
  config.raw["time_cond_proj_dim"] = dim;
}

void UNet2DConditionModel::check_inputs(const Tensor& sample, const std::vector<double>& timesteps,
                                        const Tensor& context, const Tensor& timestep_cond) const {
  if (sample.ndim() != 4 || sample.size(1) != config.in_channels)
    throw ShapeError("UNet: sample " + sample.shape().str() + " is not (B, " + std::to_string(config.in_channels) +
                     ", H, W)");
  if (static_cast<int64_t>(timesteps.size()) != sample.size(0))
    throw ShapeError("UNet: " + std::to_string(timesteps.size()) + " timesteps for a batch of " +
                     std::to_string(sample.size(0)));
  if (context.ndim() != 3 || context.size(0) != sample.size(0) || context.size(2) != config.cross_attention_dim)
    throw ShapeError("UNet: encoder hidden states " + context.shape().str() + " are not (B, L, " +
                     std::to_string(config.cross_attention_dim) + ")");
  const int64_t levels = static_cast<int64_t>(config.block_out_channels.size()) - 1;
  if (sample.size(2) % (int64_t(1) << levels) || sample.size(3) % (int64_t(1) << levels))
    throw ShapeError("UNet: sample size " + sample.shape().str() + " is not divisible by 2^" + std::to_string(levels));
  if (timestep_cond.defined() && (timestep_cond.ndim() != 2 || timestep_cond.size(0) != sample.size(0)))
    throw ShapeError("UNet: timestep condition " + timestep_cond.shape().str() + " is not (B, time_cond_proj_dim)");
}

Tensor UNet2DConditionModel::forward(const Tensor& sample, const std::vector<double>& timesteps,
                                     const Tensor& context, const Tensor& timestep_cond) const {
  check_inputs(sample, timesteps, context, timestep_cond);
  if (grad_enabled() || !splits_batch(sample.size(0))) return forward_unsplit(sample, timesteps, context, timestep_cond);
  return map_parts(sample.size(0), [&](int64_t begin, int64_t count) {
    const std::vector<double> t(timesteps.begin() + begin, timesteps.begin() + begin + count);
    return forward_unsplit(slice(sample, 0, begin, count), t, slice(context, 0, begin, count),
                           timestep_cond.defined() ? slice(timestep_cond, 0, begin, count) : Tensor());
  });
}

Tensor UNet2DConditionModel::forward_pair(const Tensor& sample, const std::vector<double>& timesteps,
                                          const Tensor& first, const Tensor& second) const {
  check_inputs(sample, timesteps, first, Tensor());
  if (second.shape() != first.shape())
    throw ShapeError("UNet: the pair's conditions " + first.shape().str() + " and " + second.shape().str() + " differ");
  auto pass = [&](int64_t begin, int64_t count) {  // (2·count, out, H, W)
    const std::vector<double> t(timesteps.begin() + begin, timesteps.begin() + begin + count);
    const Tensor context = concat(std::vector<Tensor>{slice(first, 0, begin, count), slice(second, 0, begin, count)}, 0);
    return forward_unsplit(slice(sample, 0, begin, count), t, context, Tensor());
  };
  if (grad_enabled()) return pass(0, sample.size(0));
  return map_pair_parts(sample.size(0), pass);
}

Tensor UNet2DConditionModel::forward_unsplit(const Tensor& sample, const std::vector<double>& timesteps,
                                             const Tensor& context, const Tensor& timestep_cond) const {
  Tensor temb = time_embedding.forward(
      timestep_features(timesteps, config.block_out_channels[0], config.flip_sin_to_cos, config.freq_shift),
      timestep_cond);  // (B, 4·C0)
  // Channels-last inside (layers.h): (B, C, H, W) → (B, H, W, C) here and back at the end.
  Tensor h = conv_in.forward(permute(sample, {0, 2, 3, 1}));  // (B, H, W, C0)
  std::vector<Tensor> skips{h};
  for (size_t i = 0; i < down_blocks.size(); ++i) h = down_blocks[i].forward(h, temb, context, &skips);
  h = mid_block->forward(h, temb, context);
  for (size_t i = 0; i < up_blocks.size(); ++i) h = up_blocks[i].forward(h, temb, context, &skips);
  h = conv_out.forward(conv_norm_out.forward(h, true));  // (B, H, W, out), 2B rows in a pair
  return permute(h, {0, 3, 1, 2});
}

}  // namespace lcd
