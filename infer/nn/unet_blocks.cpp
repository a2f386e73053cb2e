// UNet blocks (see unet_blocks.h).
#include "infer/nn/unet_blocks.h"

#include "autograd/errors.h"

namespace lcd {

static std::unique_ptr<Transformer2DModel> make_transformer(int64_t channels, const BlockSettings& s) {
  if (channels % s.heads != 0)
    throw ConfigError(std::to_string(s.heads) + " attention heads do not divide " + std::to_string(channels) + " channels");
  return std::make_unique<Transformer2DModel>(s.heads, channels / s.heads, channels, s.cross_dim, s.groups,
                                              s.use_linear_projection);
}

DownBlock::DownBlock(int64_t in, int64_t out, int layers, bool with_attention, bool add_downsample,
                     int downsample_padding, const BlockSettings& s) {
  for (int i = 0; i < layers; ++i) {
    resnets.add(std::make_unique<ResnetBlock2D>(i == 0 ? in : out, out, s.temb_channels, s.groups, s.eps));
    if (with_attention) attentions.add(make_transformer(out, s));
  }
  if (with_attention) register_module("attentions", &attentions);
  register_module("resnets", &resnets);
  if (add_downsample) {
    downsamplers.add(std::make_unique<Downsample2D>(out, downsample_padding));
    register_module("downsamplers", &downsamplers);
  }
}

Tensor DownBlock::forward(Tensor h, const Tensor& temb, const Tensor& context, std::vector<Tensor>* skips) const {
  for (size_t i = 0; i < resnets.size(); ++i) {
    h = resnets[i].forward(h, pair_rows(temb, h.size(0)));
    if (!attentions.empty()) h = attentions[i].forward(h, context);
    skips->push_back(h);
  }
  if (!downsamplers.empty()) {
    h = downsamplers[0].forward(h);
    skips->push_back(h);
  }
  return h;
}

MidBlockCrossAttn::MidBlockCrossAttn(int64_t channels, const BlockSettings& s) {
  resnets.add(std::make_unique<ResnetBlock2D>(channels, channels, s.temb_channels, s.groups, s.eps));
  attentions.add(make_transformer(channels, s));
  resnets.add(std::make_unique<ResnetBlock2D>(channels, channels, s.temb_channels, s.groups, s.eps));
  register_module("attentions", &attentions);
  register_module("resnets", &resnets);
}

Tensor MidBlockCrossAttn::forward(const Tensor& x, const Tensor& temb, const Tensor& context) const {
  Tensor h = resnets[0].forward(x, pair_rows(temb, x.size(0)));
  h = attentions[0].forward(h, context);
  return resnets[1].forward(h, pair_rows(temb, h.size(0)));
}

UpBlock::UpBlock(int64_t in, int64_t out, int64_t prev_out, int layers, bool with_attention, bool add_upsample,
                 const BlockSettings& s) {
  for (int i = 0; i < layers; ++i) {
    const int64_t skip = i == layers - 1 ? in : out;
    const int64_t resnet_in = i == 0 ? prev_out : out;
    resnets.add(std::make_unique<ResnetBlock2D>(resnet_in + skip, out, s.temb_channels, s.groups, s.eps));
    if (with_attention) attentions.add(make_transformer(out, s));
  }
  if (with_attention) register_module("attentions", &attentions);
  register_module("resnets", &resnets);
  if (add_upsample) {
    upsamplers.add(std::make_unique<Upsample2D>(out));
    register_module("upsamplers", &upsamplers);
  }
}

Tensor UpBlock::forward(Tensor h, const Tensor& temb, const Tensor& context, std::vector<Tensor>* skips) const {
  for (size_t i = 0; i < resnets.size(); ++i) {
    h = concat(std::vector<Tensor>{h, pair_rows(skips->back(), h.size(0))}, 3);  // channels-last: (N, H, W, C + C_skip)
    skips->pop_back();
    h = resnets[i].forward(h, pair_rows(temb, h.size(0)));
    if (!attentions.empty()) h = attentions[i].forward(h, context);
  }
  if (!upsamplers.empty()) h = upsamplers[0].forward(h);
  return h;
}

}  // namespace lcd
