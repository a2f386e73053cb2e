// Timestep features and embedding (see embeddings.h).
#include "infer/nn/embeddings.h"

#include <cmath>

namespace lcd {

Tensor timestep_features(const std::vector<double>& timesteps, int64_t dim, bool flip_sin_to_cos, double freq_shift) {
  const int64_t half = dim / 2;
  Tensor out = Tensor::zeros({static_cast<int64_t>(timesteps.size()), dim});  // odd dim: last column zero-padded
  for (size_t b = 0; b < timesteps.size(); ++b)
    for (int64_t i = 0; i < half; ++i) {
      const double arg = timesteps[b] * std::exp(-std::log(10000.0) * i / (half - freq_shift));
      const double first = flip_sin_to_cos ? std::cos(arg) : std::sin(arg);
      const double second = flip_sin_to_cos ? std::sin(arg) : std::cos(arg);
      out.data()[b * dim + i] = static_cast<float>(first);
      out.data()[b * dim + half + i] = static_cast<float>(second);
    }
  return out;
}

TimestepEmbedding::TimestepEmbedding(int64_t in, int64_t dim) : linear_1(in, dim), linear_2(dim, dim) {
  register_module("linear_1", &linear_1);
  register_module("linear_2", &linear_2);
}

Tensor TimestepEmbedding::forward(const Tensor& x) const { return linear_2.forward(silu(linear_1.forward(x))); }

}  // namespace lcd
