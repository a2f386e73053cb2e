// One LCD step's forward computation (DESIGN.md §4 steps 1–6), exposing every intermediate so the golden test
// can check each one:
//   z_s = α_{t_s} z_0 + σ_{t_s} ε                                            (t_s = grid[j])
//   pred = c_skip(t_s) z_s + c_out(t_s) x̂0_θ(z_s, t_s, c)                   (student: base + online LoRA, grad)
//   X = x̂0_u + s(x̂0_c − x̂0_u), E = ε_u + s(ε_c − ε_u)                      (teacher: base only, no grad)
//   z_e = √acp_prev[j] X + √(1 − acp_prev[j]) E                              (Ψ = DDIM)
//   target = c_skip(t_e) z_e + c_out(t_e) x̂0_θ⁻(z_e, t_e, c)                (target: base + EMA LoRA, no grad)
//   loss = mean(√((pred − target)² + c²) − c)  or  mean((pred − target)²)
#pragma once
#include <vector>

#include "infer/nn/unet.h"
#include "infer/schedule.h"
#include "train/trainable_lora.h"

namespace lcd {

enum class LossType { kHuber, kL2 };
enum class OdeSolver { kDdim, kDpmSolver2, kDpmSolverPP2S };

struct LcdSettings {
  int num_ddim_timesteps = 50;
  LossType loss = LossType::kHuber;
  double huber_c = 0.001;
  OdeSolver solver = OdeSolver::kDdim;
};

struct LcdBatch {
  Tensor z0;                      // (B, C, H, W) latents × scaling factor
  Tensor eps;                     // (B, C, H, W) noise
  Tensor cond, uncond;            // (B, L, D) each
  std::vector<int> j;             // grid indices 0..N−1
  std::vector<double> guidance;   // s per sample (diffusers' convention)
};

struct LcdStep {
  std::vector<int> t_s, t_e;
  Tensor z_s, pred, eps_cond, eps_uncond, z_e, target;
  Tensor loss;       // rank 0, on the tape (student only)
  Tensor loss_huber, loss_l2;  // both values, detached, for reporting
};

// Evaluates teacher, student and target through `lora`'s mode switch; leaves the LoRA in student mode.
LcdStep lcd_forward(const UNet2DConditionModel& unet, TrainableLora& lora, const NoiseSchedule& schedule,
                    const LcdSettings& settings, const LcdBatch& batch);

}  // namespace lcd
