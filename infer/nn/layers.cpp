// Basic layers: thin modules over the autograd ops.
#include "infer/nn/layers.h"

#include "autograd/inference_weights.h"
#include "autograd/storage.h"

namespace lcd {

Linear::Linear(int64_t in, int64_t out, bool with_bias) : in_features(in), out_features(out) {
  register_parameter("weight", &weight, {out, in});
  if (with_bias) register_parameter("bias", &bias, {out});
}

Tensor Linear::forward(const Tensor& x) const {
  // The first LoRA branch shares the base GEMM's pass over x (linear_lora); further ones run separately,
  // with the scale on the small up-weight (out × r) rather than on the activation.
  Tensor y = lora.empty() ? linear(x, weight, bias)
                          : linear_lora(x, weight, bias, lora[0].down, lora[0].up, lora[0].scale);
  for (size_t i = 1; i < lora.size(); ++i)
    y = add(y, linear(linear(x, lora[i].down, Tensor()), scale(lora[i].up, lora[i].scale), Tensor()));
  return y;
}

Conv2d::Conv2d(int64_t in, int64_t out, int k, int stride, int padding, bool with_bias)
    : in_channels(in), out_channels(out), kernel(k), options{stride, padding, 0} {
  register_parameter("weight", &weight, {out, in, k, k});
  if (with_bias) register_parameter("bias", &bias, {out});
}

Tensor Conv2d::forward(const Tensor& x) const {
  // The first LoRA branch shares the base convolution's patches (conv2d_nhwc_lora); further ones run separately.
  Tensor y = lora.empty() ? conv2d_nhwc(x, weight, bias, options)
                          : conv2d_nhwc_lora(x, weight, bias, lora[0].down, lora[0].up, lora[0].scale, options);
  for (size_t i = 1; i < lora.size(); ++i)
    y = add(y, conv2d_nhwc(conv2d_nhwc(x, lora[i].down, Tensor(), options), scale(lora[i].up, lora[i].scale), Tensor()));
  return y;
}

int64_t keep_forward_forms_only(Module& model) {
  int64_t freed = 0;
  for (auto& [name, m] : model.named_modules())
    if (LoraLayer* layer = m->lora_layer(); layer && layer->lora.empty()) {
      freed += keep_forward_form_only(layer->weight);
      // The freed float block would wait in the storage cache (the kept form is of another size): hand it
      // back at once, so that the float and kept weights are never resident together.
      release_cached_storage();
    }
  return freed;
}

GroupNorm::GroupNorm(int g, int64_t channels, double e) : groups(g), eps(e) {
  register_parameter("weight", &weight, {channels});
  register_parameter("bias", &bias, {channels});
  if (weight.data()) std::fill(weight.data(), weight.data() + channels, 1.0f);
}

Tensor GroupNorm::forward(const Tensor& x, bool then_silu) const {
  return group_norm_nhwc(x, groups, weight, bias, eps, then_silu);
}

LayerNorm::LayerNorm(int64_t dim, double e) : eps(e) {
  register_parameter("weight", &weight, {dim});
  register_parameter("bias", &bias, {dim});
  if (weight.data()) std::fill(weight.data(), weight.data() + dim, 1.0f);
}

Tensor LayerNorm::forward(const Tensor& x) const { return layer_norm(x, weight, bias, eps); }

}  // namespace lcd
