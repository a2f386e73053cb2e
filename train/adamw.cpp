// AdamW update over flat buffers (see adamw.h for the equations).
#include "train/adamw.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "autograd/parallel.h"

namespace lcd {

AdamW::AdamW(FlatParameters& parameters, AdamWConfig config)
    : params_(parameters),
      config_(config),
      m_(allocate_storage<float>(parameters.size(), true)),
      v_(allocate_storage<float>(parameters.size(), true)) {}

void AdamW::scale_lr(int64_t begin, int64_t end, double factor) {
  if (begin < 0 || end > params_.size() || begin >= end) throw std::invalid_argument("AdamW::scale_lr: bad range");
  for (const LrScale& r : lr_scales_)
    if (begin < r.end && r.begin < end) throw std::invalid_argument("AdamW::scale_lr: ranges overlap");
  lr_scales_.push_back({begin, end, factor});
  std::sort(lr_scales_.begin(), lr_scales_.end(), [](const LrScale& a, const LrScale& b) { return a.begin < b.begin; });
}

void AdamW::step(double lr) {
  ++steps_;
  const double bc1 = 1.0 - std::pow(config_.beta1, static_cast<double>(steps_));
  const double bc2 = 1.0 - std::pow(config_.beta2, static_cast<double>(steps_));
  int64_t at = 0;
  for (const LrScale& r : lr_scales_) {
    if (at < r.begin) update(at, r.begin, lr, bc1, bc2);
    update(r.begin, r.end, lr * r.factor, bc1, bc2);
    at = r.end;
  }
  if (at < params_.size()) update(at, params_.size(), lr, bc1, bc2);
}

void AdamW::update(int64_t begin, int64_t end, double lr, double bc1, double bc2) {
  const float decay = static_cast<float>(1.0 - lr * config_.weight_decay);
  const float b1 = static_cast<float>(config_.beta1), b2 = static_cast<float>(config_.beta2);
  // 1 − β in double, then rounded (as torch does): 1 − float(0.999) is 4.7e-5 off 0.001.
  const float c1 = static_cast<float>(1.0 - config_.beta1), c2 = static_cast<float>(1.0 - config_.beta2);
  const float step_size = static_cast<float>(lr / bc1);
  const float inv_sqrt_bc2 = static_cast<float>(1.0 / std::sqrt(bc2));
  const float eps = static_cast<float>(config_.eps);
  float* p = params_.values();
  const float* g = params_.grads();
  float* m = m_.get();
  float* v = v_.get();
  parallel_ranges(end - begin, splits_parameter_loop(end - begin), [&](int64_t b, int64_t e) {
#pragma omp simd
    for (int64_t i = begin + b; i < begin + e; ++i) {
      p[i] *= decay;
      m[i] = b1 * m[i] + c1 * g[i];
      v[i] = b2 * v[i] + c2 * g[i] * g[i];
      p[i] -= step_size * m[i] / (std::sqrt(v[i]) * inv_sqrt_bc2 + eps);
    }
  });
}

}  // namespace lcd
