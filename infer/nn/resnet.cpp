// ResnetBlock2D, Downsample2D, Upsample2D (see resnet.h).
#include "infer/nn/resnet.h"

namespace lcd {

ResnetBlock2D::ResnetBlock2D(int64_t in, int64_t out, int64_t temb_channels, int groups, double eps)
    : norm1(groups, in, eps), conv1(in, out, 3, 1, 1), norm2(groups, out, eps), conv2(out, out, 3, 1, 1) {
  register_module("norm1", &norm1);
  register_module("conv1", &conv1);
  if (temb_channels > 0) {
    time_emb_proj = std::make_unique<Linear>(temb_channels, out);
    register_module("time_emb_proj", time_emb_proj.get());
  }
  register_module("norm2", &norm2);
  register_module("conv2", &conv2);
  if (in != out) {
    conv_shortcut = std::make_unique<Conv2d>(in, out, 1);
    register_module("conv_shortcut", conv_shortcut.get());
  }
}

Tensor ResnetBlock2D::forward(const Tensor& x, const Tensor& temb) const {
  Tensor h = conv1.forward(norm1.forward(x, true));  // (N, H, W, out)
  if (time_emb_proj && temb.defined()) {
    Tensor t = time_emb_proj->forward(silu(temb));  // (N, out)
    h = add(h, reshape(t, Shape{t.size(0), 1, 1, t.size(1)}));
  }
  h = conv2.forward(norm2.forward(h, true));  // (N, H, W, out)
  return add(conv_shortcut ? conv_shortcut->forward(x) : x, h);
}

Downsample2D::Downsample2D(int64_t channels, int padding) : conv(channels, channels, 3, 2, padding) {
  if (padding == 0) conv.options.extra_pad_end = 1;
  register_module("conv", &conv);
}

Tensor Downsample2D::forward(const Tensor& x) const { return conv.forward(x); }

Upsample2D::Upsample2D(int64_t channels) : conv(channels, channels, 3, 1, 1) { register_module("conv", &conv); }

Tensor Upsample2D::forward(const Tensor& x) const { return conv.forward(upsample_nearest2x_nhwc(x)); }

}  // namespace lcd
