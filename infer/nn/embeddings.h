// Sinusoidal timestep features (diffusers' get_timestep_embedding) and the TimestepEmbedding MLP.
#pragma once
#include <memory>
#include <vector>

#include "infer/nn/layers.h"

namespace lcd {

// (B) timesteps → (B, dim): with half = dim/2 and f_i = exp(−ln(10000)·i/(half − freq_shift)),
// [sin(t·f), cos(t·f)], swapped to [cos, sin] when flip_sin_to_cos. Computed in double.
Tensor timestep_features(const std::vector<double>& timesteps, int64_t dim, bool flip_sin_to_cos, double freq_shift);

// diffusers' get_guidance_scale_embedding (the LCM pipeline's w-embedding): (B) scales w → (B, dim) with
// half = dim/2, f_i = exp(−i·ln(10000)/(half − 1)), [sin(1000·w·f), cos(1000·w·f)], zero-padded when dim is odd.
// Computed in float32 as diffusers does, so that the same w gives the same features. The LCM script and pipeline
// both embed w = s − 1 for a guidance scale s in the diffusers convention (DESIGN.md §4).
Tensor guidance_scale_embedding(const std::vector<double>& w, int64_t dim);

// (cond_proj(condition) +) x → linear_1 → SiLU → linear_2. cond_proj (Linear(cond_dim, in), no bias) exists
// when the UNet has time_cond_proj_dim; a forward without a condition skips it, as diffusers does.
class TimestepEmbedding : public Module {
 public:
  TimestepEmbedding(int64_t in, int64_t dim);
  Tensor forward(const Tensor& x, const Tensor& condition = Tensor()) const;
  // Adds cond_proj (zero weights) for conditions of width cond_dim.
  void add_cond_proj(int64_t cond_dim);
  Linear linear_1, linear_2;
  std::unique_ptr<Linear> cond_proj;
};

}  // namespace lcd
