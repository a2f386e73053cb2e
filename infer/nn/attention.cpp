// Attention modules (see attention.h).
#include "infer/nn/attention.h"

#include "autograd/errors.h"

namespace lcd {

Tensor pair_rows(const Tensor& x, int64_t rows) {
  if (x.size(0) == rows) return x;
  if (2 * x.size(0) != rows)
    throw ShapeError("pair_rows: " + x.shape().str() + " has neither " + std::to_string(rows) + " rows nor half as many");
  return concat(std::vector<Tensor>{x, x}, 0);
}

Attention::Attention(int64_t query_dim, int64_t cross_dim, int h, int64_t head_dim, bool qkv_bias)
    : heads(h),
      to_q(query_dim, h * head_dim, qkv_bias),
      to_k(cross_dim ? cross_dim : query_dim, h * head_dim, qkv_bias),
      to_v(cross_dim ? cross_dim : query_dim, h * head_dim, qkv_bias),
      to_out(h * head_dim, query_dim, true) {
  register_module("to_q", &to_q);
  register_module("to_k", &to_k);
  register_module("to_v", &to_v);
  register_module("to_out.0", &to_out);
}

Tensor Attention::forward(const Tensor& x, const Tensor& context) const {
  const Tensor& kv = context.defined() ? context : x;
  return to_out.forward(attention(to_q.forward(x), to_k.forward(kv), to_v.forward(kv), heads));
}

GEGLU::GEGLU(int64_t dim, int64_t inner) : proj(dim, 2 * inner) { register_module("proj", &proj); }

Tensor GEGLU::forward(const Tensor& x) const { return geglu(proj.forward(x)); }  // (B, L, inner)

FeedForward::FeedForward(int64_t dim, int mult) : geglu(dim, dim * mult), out(dim * mult, dim) {
  register_module("net.0", &geglu);
  register_module("net.2", &out);
}

Tensor FeedForward::forward(const Tensor& x) const { return out.forward(geglu.forward(x)); }

BasicTransformerBlock::BasicTransformerBlock(int64_t dim, int heads, int64_t head_dim, int64_t cross_dim)
    : norm1(dim, 1e-5),
      attn1(dim, 0, heads, head_dim, false),
      norm2(dim, 1e-5),
      attn2(dim, cross_dim, heads, head_dim, false),
      norm3(dim, 1e-5),
      ff(dim) {
  register_module("norm1", &norm1);
  register_module("attn1", &attn1);
  register_module("norm2", &norm2);
  register_module("attn2", &attn2);
  register_module("norm3", &norm3);
  register_module("ff", &ff);
}

Tensor BasicTransformerBlock::forward(const Tensor& x, const Tensor& context) const {
  Tensor h = add(attn1.forward(norm1.forward(x), Tensor()), x);  // (B, L, dim), or (B/2, L, dim) in a pair
  if (context.defined()) h = pair_rows(h, context.size(0));        // a pair's rows double here: (B, L, dim)
  h = add(attn2.forward(norm2.forward(h), context), h);
  return add(ff.forward(norm3.forward(h)), h);
}

Transformer2DModel::Transformer2DModel(int heads, int64_t head_dim, int64_t channels, int64_t cross_dim, int groups,
                                       bool linear_projection)
    : use_linear_projection(linear_projection), norm(groups, channels, 1e-6) {
  const int64_t inner = heads * head_dim;
  register_module("norm", &norm);
  if (use_linear_projection) {
    proj_in = std::make_unique<Linear>(channels, inner);
    proj_out = std::make_unique<Linear>(inner, channels);
  } else {
    proj_in = std::make_unique<Conv2d>(channels, inner, 1);
    proj_out = std::make_unique<Conv2d>(inner, channels, 1);
  }
  register_module("proj_in", proj_in.get());
  transformer_blocks.add(std::make_unique<BasicTransformerBlock>(inner, heads, head_dim, cross_dim));
  register_module("transformer_blocks", &transformer_blocks);
  register_module("proj_out", proj_out.get());
}

Tensor Transformer2DModel::forward(const Tensor& x, const Tensor& context) const {
  const int64_t b = x.size(0), hgt = x.size(1), wid = x.size(2), c = x.size(3);
  Tensor h = norm.forward(x);  // (B, H, W, C)
  // Channels-last pixels are already the tokens: (B, H, W, C) and (B, H·W, C) share one layout, and a 1×1
  // convolution is the linear projection of each token.
  if (use_linear_projection)
    h = static_cast<const Linear&>(*proj_in).forward(reshape(h, Shape{b, hgt * wid, c}));  // (B, H·W, inner)
  else
    h = reshape(static_cast<const Conv2d&>(*proj_in).forward(h), std::vector<int64_t>{b, hgt * wid, -1});  // (B, H·W, inner)
  for (size_t i = 0; i < transformer_blocks.size(); ++i) h = transformer_blocks[i].forward(h, context);
  const int64_t inner = h.size(2);
  if (use_linear_projection)
    h = reshape(static_cast<const Linear&>(*proj_out).forward(h), Shape{h.size(0), hgt, wid, c});  // (B, H, W, C)
  else
    h = static_cast<const Conv2d&>(*proj_out).forward(reshape(h, Shape{h.size(0), hgt, wid, inner}));  // (B, H, W, C)
  return add(h, pair_rows(x, h.size(0)));
}

SpatialSelfAttention::SpatialSelfAttention(int64_t channels, int64_t head_dim, int groups, double eps)
    : Attention(channels, 0, static_cast<int>(channels / head_dim), head_dim, true), group_norm(groups, channels, eps) {
  register_module("group_norm", &group_norm);
}

Tensor SpatialSelfAttention::forward(const Tensor& x) const {
  const int64_t b = x.size(0), hgt = x.size(1), wid = x.size(2), c = x.size(3);
  Tensor tokens = reshape(group_norm.forward(x), Shape{b, hgt * wid, c});  // (B, H·W, C)
  Tensor h = Attention::forward(tokens, Tensor());                         // (B, H·W, C)
  return add(reshape(h, Shape{b, hgt, wid, c}), x);
}

}  // namespace lcd
