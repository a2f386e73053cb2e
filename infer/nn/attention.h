// Attention modules as diffusers defines them (attention_processor.py, attention.py, transformer_2d.py):
// Attention (to_q/to_k/to_v/to_out.0), FeedForward with GEGLU, BasicTransformerBlock, Transformer2DModel,
// and the autoencoder's spatial self-attention (Attention with group_norm and a residual connection).
#pragma once
#include <memory>

#include "infer/nn/layers.h"

namespace lcd {

// UNet2DConditionModel::forward_pair's rows: x itself when it has `rows` rows, [x; x] when it has half as many
// (computed before the pass's first cross-attention, once per sample); a ShapeError otherwise.
Tensor pair_rows(const Tensor& x, int64_t rows);

class Attention : public Module {
 public:
  // cross_dim 0 means self-attention (keys and values from the query's own input).
  Attention(int64_t query_dim, int64_t cross_dim, int heads, int64_t head_dim, bool qkv_bias);
  // x (B, Lq, query_dim), context (B, Lk, cross_dim) or undefined for self-attention → (B, Lq, query_dim)
  Tensor forward(const Tensor& x, const Tensor& context) const;

  int heads;
  Linear to_q, to_k, to_v;
  Linear to_out;  // named "to_out.0"; diffusers' to_out.1 is dropout (no parameters)
};

// net.0 = GEGLU(proj: dim → 2·inner), net.2 = Linear(inner → dim): y = net.2(h ⊙ gelu(gate)), [h, gate] = proj(x)
class GEGLU : public Module {
 public:
  GEGLU(int64_t dim, int64_t inner);
  Tensor forward(const Tensor& x) const;
  Linear proj;
};

class FeedForward : public Module {
 public:
  explicit FeedForward(int64_t dim, int mult = 4);
  Tensor forward(const Tensor& x) const;
  GEGLU geglu;  // named "net.0"
  Linear out;   // named "net.2" (net.1 is dropout)
};

class BasicTransformerBlock : public Module {
 public:
  BasicTransformerBlock(int64_t dim, int heads, int64_t head_dim, int64_t cross_dim);
  // h = attn1(norm1(x)) + x; h = attn2(norm2(h), context) + h; h = ff(norm3(h)) + h. x (B, L, dim), context
  // (B, Lk, cross_dim); or for forward_pair x (B/2, L, dim), and h doubles to [h; h] before attn2.
  Tensor forward(const Tensor& x, const Tensor& context) const;
  LayerNorm norm1;
  Attention attn1;
  LayerNorm norm2;
  Attention attn2;
  LayerNorm norm3;
  FeedForward ff;
};

class Transformer2DModel : public Module {
 public:
  Transformer2DModel(int heads, int64_t head_dim, int64_t channels, int64_t cross_dim, int groups,
                     bool use_linear_projection);
  // x (B, H, W, C), context (B, L, cross_dim) → (B, H, W, C), with the input added back (residual).
  Tensor forward(const Tensor& x, const Tensor& context) const;

  bool use_linear_projection;
  GroupNorm norm;  // eps 1e-6 as in diffusers
  std::unique_ptr<Module> proj_in, proj_out;  // Conv2d 1×1 or Linear
  ModuleList<BasicTransformerBlock> transformer_blocks;
};

// The autoencoder's mid-block attention: group_norm → single-head attention over H·W tokens → + x.
// Its group_norm, to_q, to_k, to_v and to_out.0 all sit directly under this module's name.
class SpatialSelfAttention : public Attention {
 public:
  SpatialSelfAttention(int64_t channels, int64_t head_dim, int groups, double eps);
  Tensor forward(const Tensor& x) const;  // (B, H, W, C) → (B, H, W, C)
  GroupNorm group_norm;
};

}  // namespace lcd
