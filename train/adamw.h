// AdamW (Loshchilov & Hutter) over FlatParameters, as torch.optim.AdamW computes it:
//   θ ← θ − lr·λ·θ;  m ← β1 m + (1−β1) g;  v ← β2 v + (1−β2) g²;
//   θ ← θ − (lr / (1 − β1ᵗ)) · m / (√v / √(1 − β2ᵗ) + ε).
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

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
  // Multiplies lr (and with it the decoupled weight decay, as a torch parameter group with its own lr does) for
  // the flat range [begin, end); ranges must not overlap.
  void scale_lr(int64_t begin, int64_t end, double factor);
  int64_t steps() const { return steps_; }
  // The moments, for checkpoints (size() floats each).
  float* first_moment() { return m_.get(); }
  float* second_moment() { return v_.get(); }
  void set_steps(int64_t steps) { steps_ = steps; }
  const AdamWConfig& config() const { return config_; }

 private:
  FlatParameters& params_;
  AdamWConfig config_;
  struct LrScale {
    int64_t begin, end;
    double factor;
  };
  std::shared_ptr<float> m_, v_;
  std::vector<LrScale> lr_scales_;  // sorted by begin
  int64_t steps_ = 0;

  void update(int64_t begin, int64_t end, double lr, double bc1, double bc2);
};

}  // namespace lcd
