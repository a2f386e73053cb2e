// The diffusion objective (ε-prediction training, DESIGN.md §7): t ~ U{0..T−1}, z_t = α_t z_0 + σ_t ε, the
// condition replaced by the unconditional one with probability p (so the model supports CFG), and
// loss = mean((net(z_t, t, c) − target)²) with target ε (or v = α_t ε − σ_t z_0, or z_0, per prediction type).
#pragma once
#include <vector>

#include "autograd/random.h"
#include "infer/nn/unet.h"
#include "infer/schedule.h"

namespace lcd {

struct DiffusionBatch {
  Tensor z0, eps;
  Tensor cond;                // (B, L, D), after condition dropout
  std::vector<int> t;
};

Tensor diffusion_loss(const UNet2DConditionModel& unet, const NoiseSchedule& schedule, const DiffusionBatch& batch);

}  // namespace lcd
