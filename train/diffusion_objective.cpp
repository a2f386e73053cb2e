// The diffusion objective (see diffusion_objective.h).
#include "train/diffusion_objective.h"

#include "autograd/batch_parallel.h"
#include "autograd/ops.h"

namespace lcd {

Tensor diffusion_loss_part(const UNet2DConditionModel& unet, const NoiseSchedule& s, const DiffusionBatch& b,
                           int64_t begin, int64_t count) {
  std::vector<double> alpha, sigma, t;
  for (int64_t i = begin; i < begin + count; ++i) {
    alpha.push_back(s.alpha(b.t[i]));
    sigma.push_back(s.sigma(b.t[i]));
    t.push_back(b.t[i]);
  }
  Tensor z0, eps, cond;
  {
    NoGradGuard no_grad;
    z0 = slice(b.z0, 0, begin, count);    // (count, C, H, W)
    eps = slice(b.eps, 0, begin, count);  // (count, C, H, W)
    cond = slice(b.cond, 0, begin, count);
  }
  const Tensor a = per_sample(alpha), sg = per_sample(sigma);
  Tensor z_t = add(mul(a, z0), mul(sg, eps));
  Tensor target;
  switch (s.prediction) {
    case PredictionType::kEpsilon: target = eps; break;
    case PredictionType::kVPrediction: target = sub(mul(a, eps), mul(sg, z0)); break;
    case PredictionType::kSample: target = z0; break;
  }
  const double share = b.weight * static_cast<double>(count) / static_cast<double>(b.z0.size(0));
  return scale(mse_loss(unet.forward(z_t, t, cond), target), share);
}

Tensor diffusion_loss(const UNet2DConditionModel& unet, const NoiseSchedule& s, const DiffusionBatch& b) {
  return diffusion_loss_part(unet, s, b, 0, b.z0.size(0));
}

double diffusion_loss_and_gradients(const UNet2DConditionModel& unet, const NoiseSchedule& s, const DiffusionBatch& b,
                                    FlatParameters& params) {
  return parallel_backward(params, b.z0.size(0), [&](int64_t begin, int64_t count) {
    return diffusion_loss_part(unet, s, b, begin, count);
  });
}

}  // namespace lcd
