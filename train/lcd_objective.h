// One consistency-distillation step (DESIGN.md §4 steps 1–6, §10), for LCD and its variants:
//   z_s = α_{t_s} z_0 + σ_{t_s} ε                                            (t_s = grid[j])
//   pred = f_θ(z_s, t_s, c)                                                  (student: base + online LoRA, grad)
//   X = x̂0_u + s(x̂0_c − x̂0_u), E = ε_u + s(ε_c − ε_u)                      (teacher: base only, no grad)
//   z_e = Ψ(z_s; t_s → t_e)                                                  (DDIM, DPM-Solver-2 or ++(2S))
//   target = f_θ⁻(z_e, t_e, c)                                               (target: base + EMA LoRA, no grad)
//   loss = mean(√((pred − target)² + c²) − c)  or  mean((pred − target)²)
// with the consistency function f(z, t) = c_skip(t) z + c_out(t) x̂0 (LCD) or, for PCM with M phases,
// f(z, t) = √ᾱ_e x̂0 + √(1 − ᾱ_e) ε̂ at the lower edge e of j's phase (the target is z_e itself when t_e = e).
// LCF (consistency fine-tuning, no teacher) takes z_e = α_{t_e} z_0 + σ_{t_e} ε on the forward process instead.
// Guidance-conditioned LCD feeds student and target the embedding of w = s − 1 (diffusers' LCM script; the
// teacher, the base model, gets none).
// in two stages: the no-grad stages for the whole batch (lcd_targets: steps 1, 2, 4, 5, batch-parallel inside
// the UNet), then the student and its loss for any range of samples (lcd_student: steps 3 and 6), so that the
// trainer can run the student's forward and backward batch-parallel (lcd_loss_and_gradients).
#pragma once
#include <vector>

#include "autograd/flat_parameters.h"
#include "autograd/random.h"
#include "infer/nn/unet.h"
#include "infer/schedule.h"
#include "train/teacher_solver.h"
#include "train/trainable_lora.h"

namespace lcd {

enum class LossType { kHuber, kL2 };

struct LcdSettings {
  int num_ddim_timesteps = 50;
  LossType loss = LossType::kHuber;
  double huber_c = 0.001;
  OdeSolver solver = OdeSolver::kDdim;
  int phases = 0;            // PCM's M; 0: LCD's boundary parameterisation
  bool teacher_free = false;  // LCF: z_e on the forward process from the same noise
  bool guidance_embedding = false;  // student and target see the embedding of w = s − 1 (time_cond_proj_dim)
  int guidance_embedding_dim = 256;
  double top_step_fraction = 0.0;  // share of samples drawn at the grid's top point (1-step sampling's t)
};

struct LcdBatch {
  Tensor z0;                      // (B, C, H, W) latents × scaling factor
  Tensor eps;                     // (B, C, H, W) noise
  Tensor cond, uncond;            // (B, L, D) each
  std::vector<int> j;             // grid indices 0..N−1
  std::vector<double> guidance;   // s per sample (diffusers' convention)
  double weight = 1.0;            // the batch's share of the optimised batch: 1, or a process's B_r/B (distributed.h)
};

// Step 1's grid index of one sample: uniform over 0..N−1, or with probability top_step_fraction (> 0: one more
// draw) the top point N − 1, t = 999, the only point that 1-step sampling evaluates (uniform draws give it 1/N
// of the samples). With top_step_fraction 0 the draws are those of a plain uniform index.
int draw_grid_index(Rng& rng, const LcdSettings& settings);

// Steps 1, 2, 4 and 5, without a tape.
struct LcdTargets {
  std::vector<int> t_s, t_e, edge;  // edge: PCM's lower phase edge per sample (empty for LCD)
  Tensor w_embedding;  // (B, guidance_embedding_dim) of w = s − 1 for student and target, or undefined
  Tensor z_s, eps_cond, eps_uncond, z_e, target;  // (B, C, H, W) each
};
// Evaluates the teacher and the target through `lora`'s mode switch and leaves the LoRA in student mode.
LcdTargets lcd_targets(const UNet2DConditionModel& unet, TrainableLora& lora, const NoiseSchedule& schedule,
                       const LcdSettings& settings, const LcdBatch& batch);

// Steps 3 and 6 for samples [begin, begin + count) of the batch (LoRA in student mode): the prediction on the
// tape, and the part's share of the batch-mean loss, weight · count/B · mean over the part (so the parts' losses
// add up to the batch's loss, and the processes' batches to the optimised one), on the tape for the chosen loss and as values for both.
struct LcdStudentPart {
  Tensor pred;  // (count, C, H, W)
  Tensor loss;  // rank 0, on the tape
  double loss_huber = 0, loss_l2 = 0;
};
LcdStudentPart lcd_student(const UNet2DConditionModel& unet, const NoiseSchedule& schedule, const LcdSettings& settings,
                           const LcdBatch& batch, const LcdTargets& targets, int64_t begin, int64_t count);

// The whole step on one tape for the whole batch (the golden test checks every intermediate).
struct LcdStep {
  std::vector<int> t_s, t_e, edge;
  Tensor z_s, pred, eps_cond, eps_uncond, z_e, target;
  Tensor loss;       // rank 0, on the tape (student only)
  Tensor loss_huber, loss_l2;  // both values, detached, for reporting
};
LcdStep lcd_forward(const UNet2DConditionModel& unet, TrainableLora& lora, const NoiseSchedule& schedule,
                    const LcdSettings& settings, const LcdBatch& batch);

// What a training step needs: the losses, with the gradients of the chosen one added into lora.online()'s
// gradient buffer; the student runs batch-parallel (autograd/batch_parallel.h).
struct LcdLosses {
  double loss = 0, loss_huber = 0, loss_l2 = 0;
};
LcdLosses lcd_loss_and_gradients(const UNet2DConditionModel& unet, TrainableLora& lora, const NoiseSchedule& schedule,
                                 const LcdSettings& settings, const LcdBatch& batch);

}  // namespace lcd
