// AutoencoderKL (see autoencoder.h).
#include "infer/nn/autoencoder.h"

#include <cmath>

#include "autograd/batch_parallel.h"
#include "autograd/errors.h"
#include "infer/nn/config_check.h"

namespace lcd {

using json = nlohmann::json;
constexpr double kVaeEps = 1e-6;  // diffusers hard-codes eps 1e-6 in the autoencoder's norms

AutoencoderConfig AutoencoderConfig::from_json(const json& j, const std::string& origin) {
  ConfigRules rules;
  rules.used = {"in_channels", "out_channels", "latent_channels", "block_out_channels", "layers_per_block",
                "norm_num_groups", "scaling_factor", "down_block_types", "up_block_types", "sample_size"};
  rules.free = {"force_upcast"};
  rules.must_equal = {{"act_fn", "silu"},          {"latents_mean", nullptr},         {"latents_std", nullptr},
                      {"shift_factor", nullptr},   {"mid_block_add_attention", true}, {"use_quant_conv", true},
                      {"use_post_quant_conv", true}};
  check_config_fields(j, rules, origin);
  AutoencoderConfig c;
  c.raw = j;
  auto field = [&](const char* key, const auto& fallback) { return config_field(j, key, fallback, origin); };
  c.in_channels = field("in_channels", c.in_channels);
  c.out_channels = field("out_channels", c.out_channels);
  c.latent_channels = field("latent_channels", c.latent_channels);
  c.block_out_channels = field("block_out_channels", std::vector<int64_t>{64});
  c.layers_per_block = field("layers_per_block", c.layers_per_block);
  c.norm_num_groups = field("norm_num_groups", c.norm_num_groups);
  c.scaling_factor = field("scaling_factor", c.scaling_factor);
  c.sample_size = field("sample_size", c.sample_size);
  for (const auto& t : field("down_block_types", std::vector<std::string>(c.block_out_channels.size(), "DownEncoderBlock2D")))
    if (t != "DownEncoderBlock2D") throw ConfigError(origin + ": unsupported down block type \"" + t + "\"");
  for (const auto& t : field("up_block_types", std::vector<std::string>(c.block_out_channels.size(), "UpDecoderBlock2D")))
    if (t != "UpDecoderBlock2D") throw ConfigError(origin + ": unsupported up block type \"" + t + "\"");
  if (field("down_block_types", std::vector<std::string>(c.block_out_channels.size())).size() != c.block_out_channels.size() ||
      field("up_block_types", std::vector<std::string>(c.block_out_channels.size())).size() != c.block_out_channels.size())
    throw ConfigError(origin + ": down_block_types and up_block_types need one entry per block_out_channels");
  if (c.block_out_channels.empty() || c.block_out_channels.size() > 8)
    throw ConfigError(origin + ": block_out_channels must hold 1..8 entries");
  auto fail = [&](const std::string& key, const std::string& value, const std::string& why) {
    return ConfigError(origin + ": field \"" + key + "\" = " + value + ": " + why);
  };
  for (auto [key, v] : {std::pair<const char*, int64_t>{"in_channels", c.in_channels}, {"out_channels", c.out_channels},
                        {"latent_channels", c.latent_channels}})
    if (v < 1 || v > 4096) throw fail(key, std::to_string(v), "must be 1..4096");
  if (c.layers_per_block < 1 || c.layers_per_block > 64) throw fail("layers_per_block", std::to_string(c.layers_per_block), "must be 1..64");
  if (c.norm_num_groups < 1) throw fail("norm_num_groups", std::to_string(c.norm_num_groups), "must be ≥ 1");
  for (size_t i = 0; i < c.block_out_channels.size(); ++i) {
    const int64_t ch = c.block_out_channels[i];
    if (ch < 1 || ch > 65536 || ch % c.norm_num_groups != 0)
      throw fail("block_out_channels[" + std::to_string(i) + "]", std::to_string(ch),
                 "must be 1..65536 and a multiple of norm_num_groups " + std::to_string(c.norm_num_groups));
  }
  if (!std::isfinite(c.scaling_factor) || c.scaling_factor <= 0)
    throw fail("scaling_factor", std::to_string(c.scaling_factor), "must be a finite number > 0");
  const int64_t factor = int64_t{1} << (c.block_out_channels.size() - 1);
  if (c.sample_size < 1 || c.sample_size > 16384 || c.sample_size % factor != 0)
    throw fail("sample_size", std::to_string(c.sample_size), "must be 1..16384 and a multiple of " + std::to_string(factor));
  return c;
}

VaeMidBlock::VaeMidBlock(int64_t channels, int groups) {
  resnets.add(std::make_unique<ResnetBlock2D>(channels, channels, 0, groups, kVaeEps));
  attentions.add(std::make_unique<SpatialSelfAttention>(channels, channels, groups, kVaeEps));
  resnets.add(std::make_unique<ResnetBlock2D>(channels, channels, 0, groups, kVaeEps));
  register_module("attentions", &attentions);
  register_module("resnets", &resnets);
}

Tensor VaeMidBlock::forward(const Tensor& x) const {
  return resnets[1].forward(attentions[0].forward(resnets[0].forward(x, Tensor())), Tensor());
}

VaeDownBlock::VaeDownBlock(int64_t in, int64_t out, int layers, bool add_downsample, int groups) {
  for (int i = 0; i < layers; ++i)
    resnets.add(std::make_unique<ResnetBlock2D>(i == 0 ? in : out, out, 0, groups, kVaeEps));
  register_module("resnets", &resnets);
  if (add_downsample) {
    downsamplers.add(std::make_unique<Downsample2D>(out, 0));
    register_module("downsamplers", &downsamplers);
  }
}

Tensor VaeDownBlock::forward(Tensor h) const {
  for (size_t i = 0; i < resnets.size(); ++i) h = resnets[i].forward(h, Tensor());
  return downsamplers.empty() ? h : downsamplers[0].forward(h);
}

VaeUpBlock::VaeUpBlock(int64_t in, int64_t out, int layers, bool add_upsample, int groups) {
  for (int i = 0; i < layers; ++i)
    resnets.add(std::make_unique<ResnetBlock2D>(i == 0 ? in : out, out, 0, groups, kVaeEps));
  register_module("resnets", &resnets);
  if (add_upsample) {
    upsamplers.add(std::make_unique<Upsample2D>(out));
    register_module("upsamplers", &upsamplers);
  }
}

Tensor VaeUpBlock::forward(Tensor h) const {
  for (size_t i = 0; i < resnets.size(); ++i) h = resnets[i].forward(h, Tensor());
  return upsamplers.empty() ? h : upsamplers[0].forward(h);
}

VaeEncoder::VaeEncoder(const AutoencoderConfig& c)
    : conv_in(c.in_channels, c.block_out_channels[0], 3, 1, 1),
      mid_block(c.block_out_channels.back(), c.norm_num_groups),
      conv_norm_out(c.norm_num_groups, c.block_out_channels.back(), kVaeEps),
      conv_out(c.block_out_channels.back(), 2 * c.latent_channels, 3, 1, 1) {
  register_module("conv_in", &conv_in);
  int64_t out = c.block_out_channels[0];
  for (size_t i = 0; i < c.block_out_channels.size(); ++i) {
    const int64_t in = out;
    out = c.block_out_channels[i];
    down_blocks.add(std::make_unique<VaeDownBlock>(in, out, c.layers_per_block, i + 1 < c.block_out_channels.size(),
                                                   c.norm_num_groups));
  }
  register_module("down_blocks", &down_blocks);
  register_module("mid_block", &mid_block);
  register_module("conv_norm_out", &conv_norm_out);
  register_module("conv_out", &conv_out);
}

Tensor VaeEncoder::forward(const Tensor& x) const {
  Tensor h = conv_in.forward(x);  // (N, H, W, C0)
  for (size_t i = 0; i < down_blocks.size(); ++i) h = down_blocks[i].forward(h);
  h = mid_block.forward(h);
  return conv_out.forward(conv_norm_out.forward(h, true));  // (N, h, w, 2·latent)
}

VaeDecoder::VaeDecoder(const AutoencoderConfig& c)
    : conv_in(c.latent_channels, c.block_out_channels.back(), 3, 1, 1),
      mid_block(c.block_out_channels.back(), c.norm_num_groups),
      conv_norm_out(c.norm_num_groups, c.block_out_channels[0], kVaeEps),
      conv_out(c.block_out_channels[0], c.out_channels, 3, 1, 1) {
  register_module("conv_in", &conv_in);
  register_module("mid_block", &mid_block);
  const size_t n = c.block_out_channels.size();
  int64_t out = c.block_out_channels.back();
  for (size_t i = 0; i < n; ++i) {
    const int64_t prev = out;
    out = c.block_out_channels[n - 1 - i];
    up_blocks.add(std::make_unique<VaeUpBlock>(prev, out, c.layers_per_block + 1, i + 1 < n, c.norm_num_groups));
  }
  register_module("up_blocks", &up_blocks);
  register_module("conv_norm_out", &conv_norm_out);
  register_module("conv_out", &conv_out);
}

Tensor VaeDecoder::forward(const Tensor& z) const {
  Tensor h = mid_block.forward(conv_in.forward(z));  // (N, h, w, C_last)
  for (size_t i = 0; i < up_blocks.size(); ++i) h = up_blocks[i].forward(h);
  return conv_out.forward(conv_norm_out.forward(h, true));  // (N, H, W, out)
}

Tensor DiagonalGaussian::sample(std::mt19937_64& rng) const {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  Tensor eps = Tensor::empty(mean.shape());
  for (int64_t i = 0; i < eps.numel(); ++i) eps.data()[i] = normal(rng);
  return add(mean, mul(exp(scale(logvar, 0.5)), eps));
}

Tensor DiagonalGaussian::kl() const {
  Tensor per_element = sub(add(mul(mean, mean), exp(logvar)), scale(logvar, 1.0, 1.0));  // mean² + var − 1 − logvar
  return scale(sum(per_element, {1, 2, 3}), 0.5);
}

AutoencoderKL::AutoencoderKL(const AutoencoderConfig& c)
    : config(c),
      encoder(c),
      decoder(c),
      quant_conv(2 * c.latent_channels, 2 * c.latent_channels, 1),
      post_quant_conv(c.latent_channels, c.latent_channels, 1) {
  register_module("encoder", &encoder);
  register_module("decoder", &decoder);
  register_module("quant_conv", &quant_conv);
  register_module("post_quant_conv", &post_quant_conv);
}

DiagonalGaussian AutoencoderKL::encode(const Tensor& x) const {
  if (x.ndim() != 4 || x.size(1) != config.in_channels)
    throw ShapeError("AutoencoderKL: images " + x.shape().str() + " are not (N, " + std::to_string(config.in_channels) +
                     ", H, W)");
  // Channels-last inside (layers.h): NCHW images in, NCHW moments out; batch-parallel without a tape.
  auto moments = [&](const Tensor& images) {
    return permute(quant_conv.forward(encoder.forward(permute(images, {0, 2, 3, 1}))), {0, 3, 1, 2});
  };
  const Tensor m = grad_enabled() ? moments(x) : map_parts(x.size(0), [&](int64_t begin, int64_t count) {
    return moments(slice(x, 0, begin, count));
  });
  auto parts = chunk(m, 2, 1);
  // clamp(logvar, −30, 20) without a clamp op: the bounds are never reached by trained models, and where
  // they would be we clamp in place on the forward value only.
  Tensor logvar = parts[1];
  for (int64_t i = 0; i < logvar.numel(); ++i) logvar.data()[i] = std::min(20.0f, std::max(-30.0f, logvar.data()[i]));
  return {parts[0], logvar};
}

Tensor AutoencoderKL::decode(const Tensor& z) const {
  auto images = [&](const Tensor& latents) {  // NCHW in and out
    return permute(decoder.forward(post_quant_conv.forward(permute(latents, {0, 2, 3, 1}))), {0, 3, 1, 2});
  };
  if (grad_enabled()) return images(z);
  return map_parts(z.size(0), [&](int64_t begin, int64_t count) { return images(slice(z, 0, begin, count)); });
}

}  // namespace lcd
