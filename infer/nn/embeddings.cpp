// Timestep features and embedding (see embeddings.h).
#include "infer/nn/embeddings.h"

#include <cmath>

#include "autograd/errors.h"
#include "autograd/ops.h"

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

Tensor guidance_scale_embedding(const std::vector<double>& w, int64_t dim) {
  const int64_t half = dim / 2;
  Tensor out = Tensor::zeros({static_cast<int64_t>(w.size()), dim});  // (B, dim); odd dim: last column zero
  const float step = std::log(10000.0f) / static_cast<float>(half - 1);
  for (size_t b = 0; b < w.size(); ++b) {
    const float scaled = static_cast<float>(w[b]) * 1000.0f;
    for (int64_t i = 0; i < half; ++i) {
      const float arg = scaled * std::exp(static_cast<float>(i) * -step);
      out.data()[b * dim + i] = std::sin(arg);
      out.data()[b * dim + half + i] = std::cos(arg);
    }
  }
  return out;
}

TimestepEmbedding::TimestepEmbedding(int64_t in, int64_t dim) : linear_1(in, dim), linear_2(dim, dim) {
  register_module("linear_1", &linear_1);
  register_module("linear_2", &linear_2);
}

void TimestepEmbedding::add_cond_proj(int64_t cond_dim) {
  if (cond_proj) throw ValueError("the time embedding already has cond_proj");
  cond_proj = std::make_unique<Linear>(cond_dim, linear_1.in_features, false);
  cond_proj->weight = Tensor::zeros(cond_proj->weight.shape());
  register_module("cond_proj", cond_proj.get());
}

Tensor TimestepEmbedding::forward(const Tensor& x, const Tensor& condition) const {
  if (!condition.defined()) return linear_2.forward(silu(linear_1.forward(x)));
  if (!cond_proj) throw ShapeError("a guidance embedding was given to a UNet without time_cond_proj_dim");
  if (condition.ndim() != 2 || condition.size(0) != x.size(0) || condition.size(1) != cond_proj->in_features)
    throw ShapeError("timestep condition " + condition.shape().str() + " is not (" + std::to_string(x.size(0)) + ", " +
                     std::to_string(cond_proj->in_features) + ")");
  return linear_2.forward(silu(linear_1.forward(add(x, cond_proj->forward(condition)))));
}

}  // namespace lcd
