// The diffusion objective (ε-prediction training, DESIGN.md §7): t ~ U{0..T−1}, z_t = α_t z_0 + σ_t ε, the
// condition replaced by the unconditional one with probability p (so the model supports CFG), and
// loss = mean((net(z_t, t, c) − target)²) with target ε (or v = α_t ε − σ_t z_0, or z_0, per prediction type).
#pragma once
#include <vector>

#include "autograd/flat_parameters.h"
#include "autograd/random.h"
#include "infer/nn/unet.h"
#include "infer/schedule.h"

namespace lcd {

struct DiffusionBatch {
  Tensor z0, eps;
  Tensor cond;                // (B, L, D), after condition dropout
  std::vector<int> t;
  double weight = 1.0;        // the batch's share of the optimised batch: 1, or a process's B_r/B (distributed.h)
};

// Samples [begin, begin + count)'s share of the batch-mean loss, weight · count/B · mean over the part, on the tape.
Tensor diffusion_loss_part(const UNet2DConditionModel& unet, const NoiseSchedule& schedule, const DiffusionBatch& batch,
                           int64_t begin, int64_t count);
// The whole batch's loss on one tape.
Tensor diffusion_loss(const UNet2DConditionModel& unet, const NoiseSchedule& schedule, const DiffusionBatch& batch);
// The loss, with its gradients added into `params`' gradient buffer, the batch run in parallel parts.
double diffusion_loss_and_gradients(const UNet2DConditionModel& unet, const NoiseSchedule& schedule,
                                    const DiffusionBatch& batch, FlatParameters& params);

}  // namespace lcd
