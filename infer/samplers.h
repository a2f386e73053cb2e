// Samplers (DESIGN.md §4): DDIM (η = 0) and DPM-Solver++(2M) for the teacher with classifier-free guidance,
// and LCM multistep sampling, as diffusers' DDIMScheduler, DPMSolverMultistepScheduler and LCMScheduler compute
// them with Stable Diffusion's settings. Stateless: each takes a denoiser and returns the final latents.
#pragma once
#include <functional>
#include <vector>

#include "autograd/random.h"
#include "infer/nn/unet.h"
#include "infer/schedule.h"

namespace lcd {

// The network output at (z, t) for every sample (with guidance already applied, if any).
using Denoiser = std::function<Tensor(const Tensor& z, int t)>;

// Classifier-free guidance with one convention (DESIGN.md §4): ε̃ = ε_u + s(ε_c − ε_u); s = 1 skips the
// unconditional pass. cond (B, L, D); uncond (B or 1, L, D), used only when s ≠ 1.
struct Conditioning {
  Tensor cond, uncond;
  double guidance = 1.0;
};
Tensor guided_output(const UNet2DConditionModel& unet, const Tensor& z, int t, const Conditioning& c);
Denoiser unet_denoiser(const UNet2DConditionModel& unet, Conditioning c);

// DDIM, η = 0, "leading" timesteps with steps_offset, ᾱ_prev = ᾱ_0 past the end (set_alpha_to_one false).
Tensor ddim_sample(const NoiseSchedule& s, const Denoiser& model, Tensor z, int steps, int steps_offset = 1);

// DPM-Solver++(2M), midpoint form, "leading" timesteps, final σ = 0, first order on the first and last step
// (lower_order_final).
Tensor dpmpp_2m_sample(const NoiseSchedule& s, const Denoiser& model, Tensor z, int steps, int steps_offset = 1);

// Gaussian noise for a batch with one independent stream per sample (seeded from (seed, sample index)), so a
// sample's noise does not depend on how the samples are batched.
class BatchNoise {
 public:
  BatchNoise(uint64_t seed, int64_t first_sample, int64_t count);
  Tensor draw(const Shape& shape);  // shape[0] must equal count

 private:
  std::vector<Rng> streams_;
};

// LCM multistep: at each t, denoised = c_out(t)·x̂0 + c_skip(t)·z; then z = α_t' denoised + σ_t' ε' with fresh
// noise ε' at the next timestep t'. Returns the last `denoised`.
Tensor lcm_sample(const NoiseSchedule& s, const Denoiser& model, Tensor z, int steps, BatchNoise& noise,
                  int original_steps = 50);

// One sampler run by name ("lcm", "ddim", "dpmpp-2m"); throws ValueError for an unknown name.
Tensor run_sampler(const std::string& name, const NoiseSchedule& s, const Denoiser& model, const Tensor& z, int steps,
                   BatchNoise& noise);

}  // namespace lcd
