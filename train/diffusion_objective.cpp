// The diffusion objective (see diffusion_objective.h).
#include "train/diffusion_objective.h"

#include "autograd/ops.h"

namespace lcd {

Tensor diffusion_loss(const UNet2DConditionModel& unet, const NoiseSchedule& s, const DiffusionBatch& b) {
  std::vector<double> alpha, sigma, t;
  for (int ti : b.t) {
    alpha.push_back(s.alpha(ti));
    sigma.push_back(s.sigma(ti));
    t.push_back(ti);
  }
  const Tensor a = per_sample(alpha), sg = per_sample(sigma);
  Tensor z_t = add(mul(a, b.z0), mul(sg, b.eps));
  Tensor target;
  switch (s.prediction) {
    case PredictionType::kEpsilon: target = b.eps; break;
    case PredictionType::kVPrediction: target = sub(mul(a, b.eps), mul(sg, b.z0)); break;
    case PredictionType::kSample: target = b.z0; break;
  }
  return mse_loss(unet.forward(z_t, t, b.cond), target);
}

}  // namespace lcd
