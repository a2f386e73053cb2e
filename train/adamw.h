// AdamW (Loshchilov & Hutter) over FlatParameters, as torch.optim.AdamW computes it:
//   θ ← θ − lr·λ·θ;  m ← β1 m + (1−β1) g;  v ← β2 v + (1−β2) g²;
//   θ ← θ − (lr / (1 − β1ᵗ)) · m / (√v / √(1 − β2ᵗ) + ε).
#pragma once
#include <cstdint>
#include <memory>

#include "autograd/flat_parameters.h"

namespace lcd {

struct AdamWConfig {
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 1e-2;
};

class AdamW {
 public:
  AdamW(FlatParameters& parameters, AdamWConfig config);
  void step(double lr);  // one update with the gradients currently in the flat buffer
  int64_t steps() const { return steps_; }
  // The moments, for checkpoints (size() floats each).
  float* first_moment() { return m_.get(); }
  float* second_moment() { return v_.get(); }
  void set_steps(int64_t steps) { steps_ = steps; }
  const AdamWConfig& config() const { return config_; }

 private:
  FlatParameters& params_;
  AdamWConfig config_;
  std::shared_ptr<float> m_, v_;
  int64_t steps_ = 0;
};

}  // namespace lcd
