// Samplers (DESIGN.md §4, §10): DDIM (η = 0) and DPM-Solver++(2M) for the teacher with classifier-free
// guidance; LCM multistep, TCD and PCM sampling for distilled adapters, as diffusers' DDIMScheduler,
// DPMSolverMultistepScheduler, LCMScheduler and TCDScheduler compute them with Stable Diffusion's settings.
// Stateless: each takes a denoiser and returns the final latents. Tools reach them through one table
// (sampler_table), which holds each sampler's defaults and documentation.
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
// unconditional pass. cond (B, L, D); uncond (B or 1, L, D), used only when s ≠ 1. A guidance-conditioned UNet
// (time_cond_proj_dim) gets the embedding of w = s − 1 instead, in one conditional pass, as diffusers' LCM
// pipeline does.
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

// TCD (diffusers' TCDScheduler, its "strategic stochastic sampling"): LCM's timesteps; from t with next
// timestep t' (0 after the last) and s = ⌊(1 − γ)t'⌋: x_s = √ᾱ_s x̂0 + √(1 − ᾱ_s) ε̂ (no boundary scalings),
// then z = √(ᾱ_t'/ᾱ_s) x_s + √(1 − ᾱ_t'/ᾱ_s) ε' with fresh noise, except on the last step or when γ = 0.
// Returns the last x_s.
Tensor tcd_sample(const NoiseSchedule& s, const Denoiser& model, Tensor z, int steps, double gamma, BatchNoise& noise,
                  int original_steps = 50);

// PCM: `phases` deterministic DDIM jumps along the phase edges of the skipping-step grid (pcm_phase_edges),
// from t = grid[N−1] to each phase's lower edge, the last to ᾱ_0.
Tensor pcm_sample(const NoiseSchedule& s, const Denoiser& model, Tensor z, int phases, int original_steps = 50);

// What a run of any sampler takes beyond the model and the starting latents.
struct SamplerRun {
  int steps = 4;
  double eta = 0.3;  // TCD's γ
  BatchNoise* noise = nullptr;  // per-step noise (LCM, TCD)
};

// One row per sampler: its name, what it is for, its defaults and how to run it. lcm-sample, bench/quality and
// the trainer's sample grids read it; adding a sampler is adding a row.
struct SamplerSpec {
  const char* name;
  const char* doc;
  bool for_distilled;  // run with the distilled adapter (guidance off by default)
  int default_steps;
  double default_guidance;
  Tensor (*run)(const NoiseSchedule& s, const Denoiser& model, const Tensor& z, const SamplerRun& run);
};
const std::vector<SamplerSpec>& sampler_table();
// The row of `name`; a ValueError listing the names otherwise.
const SamplerSpec& find_sampler(const std::string& name);
// "lcm, tcd, pcm, ddim or dpmpp-2m", for help texts and errors.
std::string sampler_names();

}  // namespace lcd
