// Sinusoidal timestep features (diffusers' get_timestep_embedding) and the TimestepEmbedding MLP.
#pragma once
#include <vector>

#include "infer/nn/layers.h"

namespace lcd {

// (B) timesteps → (B, dim): with half = dim/2 and f_i = exp(−ln(10000)·i/(half − freq_shift)),
// [sin(t·f), cos(t·f)], swapped to [cos, sin] when flip_sin_to_cos. Computed in double.
Tensor timestep_features(const std::vector<double>& timesteps, int64_t dim, bool flip_sin_to_cos, double freq_shift);

// linear_1 → SiLU → linear_2
class TimestepEmbedding : public Module {
 public:
  TimestepEmbedding(int64_t in, int64_t dim);
  Tensor forward(const Tensor& x) const;
  Linear linear_1, linear_2;
};

}  // namespace lcd
