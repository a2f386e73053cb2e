// AdamW update over flat buffers (see adamw.h for the equations).
#include "train/adamw.h"

#include <cmath>

namespace lcd {

AdamW::AdamW(FlatParameters& parameters, AdamWConfig config)
    : params_(parameters),
      config_(config),
      m_(allocate_storage<float>(parameters.size(), true)),
      v_(allocate_storage<float>(parameters.size(), true)) {}

void AdamW::step(double lr) {
  ++steps_;
  const double bc1 = 1.0 - std::pow(config_.beta1, static_cast<double>(steps_));
  const double bc2 = 1.0 - std::pow(config_.beta2, static_cast<double>(steps_));
  const float decay = static_cast<float>(1.0 - lr * config_.weight_decay);
  const float b1 = static_cast<float>(config_.beta1), b2 = static_cast<float>(config_.beta2);
  const float step_size = static_cast<float>(lr / bc1);
  const float inv_sqrt_bc2 = static_cast<float>(1.0 / std::sqrt(bc2));
  const float eps = static_cast<float>(config_.eps);
  float* p = params_.values();
  const float* g = params_.grads();
  float* m = m_.get();
  float* v = v_.get();
  const int64_t n = params_.size();
#pragma omp parallel for simd schedule(static) if (n > 65536)
  for (int64_t i = 0; i < n; ++i) {
    p[i] *= decay;
    m[i] = b1 * m[i] + (1.0f - b1) * g[i];
    v[i] = b2 * v[i] + (1.0f - b2) * g[i] * g[i];
    p[i] -= step_size * m[i] / (std::sqrt(v[i]) * inv_sqrt_bc2 + eps);
  }
}

}  // namespace lcd
