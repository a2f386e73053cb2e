// Noise schedules, timestep grids and prediction conversions (DESIGN.md §4), as stateless functions shared by
// the samplers and the trainer. t is always the integer DDPM index 0..T−1.
#pragma once
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "autograd/tensor.h"

namespace lcd {

enum class PredictionType { kEpsilon, kVPrediction, kSample };
PredictionType parse_prediction_type(const std::string& name);  // "epsilon", "v_prediction", "sample"

struct NoiseSchedule {
  std::vector<double> alphas_cumprod;  // ᾱ_t = Π_{i≤t} (1 − β_i), in double
  PredictionType prediction = PredictionType::kEpsilon;

  int num_train_timesteps() const { return static_cast<int>(alphas_cumprod.size()); }
  double alpha(int t) const;  // α_t = √ᾱ_t
  double sigma(int t) const;  // σ_t = √(1 − ᾱ_t)
  // At continuous t in [0, T−1] (a solver's midpoint): log α_t interpolated linearly between the integer
  // timesteps (DPM-Solver's "discrete" schedule), σ_t = √(1 − α_t²), λ_t = ln α_t − ln σ_t; time_of_lambda
  // inverts λ (decreasing in t) to ~1e-9.
  double alpha_at(double t) const;
  double sigma_at(double t) const;
  double lambda_at(double t) const;
  double time_of_lambda(double lambda) const;

  // β_i = (√β0 + i·(√β1 − √β0)/(T−1))² (scaled_linear) or β0 + i·(β1 − β0)/(T−1) (linear).
  static NoiseSchedule scaled_linear(int T = 1000, double beta_start = 0.00085, double beta_end = 0.012);
  static NoiseSchedule linear(int T, double beta_start, double beta_end);
  // From a diffusers scheduler_config.json object (beta_schedule, beta_start, beta_end, num_train_timesteps,
  // prediction_type); unsupported values are ConfigErrors naming the field.
  static NoiseSchedule from_config(const nlohmann::json& config, const std::string& origin);
};

// LCM boundary scalings (σ_data 0.5, timestep_scaling 10): c_skip = 0.25/((10t)² + 0.25), c_out = 10t/√((10t)² + 0.25).
struct BoundaryScalings {
  double c_skip, c_out;
};
BoundaryScalings boundary_scalings(int t, double sigma_data = 0.5, double timestep_scaling = 10.0);

// LCD skipping-step grid: k = T/N, t_j = (j+1)k − 1 for j = 0..N−1 (19, 39, …, 999 for N = 50).
std::vector<int> lcd_grid(int num_ddim_timesteps, int T = 1000);
// PCM's phases on that grid (the PCM repository's ddim_style_multiphase_pred): phase m = 0..M−1 starts at grid
// index ⌊m·N/M⌋; index j lies in the phase with the largest start ≤ j, whose lower edge is the timestep before
// its start, grid[start − 1], or 0 for the first phase.
std::vector<int> pcm_phase_starts(int phases, int num_ddim_timesteps);
int pcm_lower_edge(int j, int phases, int num_ddim_timesteps, int T = 1000);  // the edge's timestep
// LCM inference timesteps: grid reversed, indices ⌊i·N/n⌋ (999, 759, 499, 259 for n = 4).
std::vector<int> lcm_timesteps(int steps, int original_steps = 50, int T = 1000);
// DDIM "leading" spacing: (i·⌊T/n⌋ for i < n) reversed, + steps_offset (981 … 1 for n = 50).
std::vector<int> ddim_timesteps(int steps, int T = 1000, int steps_offset = 1);
// DPM-Solver++ "leading" spacing: (i·⌊T/(n+1)⌋ for i ≤ n) reversed, last dropped, + steps_offset.
std::vector<int> dpmpp_timesteps(int steps, int T = 1000, int steps_offset = 1);

// (B) values → a (B, 1, 1, 1) tensor for per-sample scaling of (B, C, H, W) latents.
Tensor per_sample(const std::vector<double>& values);

// From a network output at per-sample timesteps t (DESIGN.md §4): x̂0 and ε̂ for each prediction type.
// Built from recorded ops, so gradients flow through them (the student's x̂0 in LCD).
Tensor predicted_x0(const NoiseSchedule& s, const Tensor& output, const Tensor& z, const std::vector<int>& t);
Tensor predicted_eps(const NoiseSchedule& s, const Tensor& output, const Tensor& z, const std::vector<int>& t);
// The same at per-sample α and σ given directly (continuous times).
Tensor predicted_x0_at(const NoiseSchedule& s, const Tensor& output, const Tensor& z, const std::vector<double>& alpha,
                       const std::vector<double>& sigma);
Tensor predicted_eps_at(const NoiseSchedule& s, const Tensor& output, const Tensor& z, const std::vector<double>& alpha,
                        const std::vector<double>& sigma);

}  // namespace lcd
