// Ψ, the teacher's ODE step from t_s to t_e in LCD's step 4 (DESIGN.md §4, reference/lcd-spec.md §4.5), with
// classifier-free guidance applied inside the solver at every teacher evaluation (for a second-order Ψ,
// guiding each evaluation is not the same as the paper's (1+w)Ψ_c − wΨ_u; the guided ODE is the one the
// student's samples follow). With λ = ln α − ln σ, h = λ_e − λ_s and the midpoint s_m at λ_s + h/2:
//   DDIM:            z_e = α_e X(z_s) + σ_e E(z_s)
//   DPM-Solver-2:    u = (α_m/α_s) z_s − σ_m (e^{h/2} − 1) E(z_s);   z_e = (α_e/α_s) z_s − σ_e (e^h − 1) E(u, s_m)
//   DPM-Solver++(2S): u = (σ_m/σ_s) z_s − α_m (e^{−h/2} − 1) X(z_s); z_e = (σ_e/σ_s) z_s − α_e (e^{−h} − 1) X(u, s_m)
// The midpoint is a continuous time (NoiseSchedule::time_of_lambda); the teacher is evaluated there, cond and
// uncond, which is the second-order solvers' extra cost.
#pragma once
#include <functional>
#include <string>
#include <vector>

#include "infer/schedule.h"

namespace lcd {

enum class OdeSolver { kDdim, kDpmSolver2, kDpmSolverPP2S };
OdeSolver parse_ode_solver(const std::string& name);  // "ddim", "dpm-solver-2", "dpm-solver++2s"
int teacher_evaluations(OdeSolver solver);             // points per sample at which the teacher runs: 1 or 2

// The guided teacher's x̂0 and ε̂ (X = x̂0_u + s(x̂0_c − x̂0_u), E likewise) at per-sample (continuous) times.
struct GuidedPrediction {
  Tensor x0, eps;  // (B, C, H, W) each
};
using GuidedTeacher = std::function<GuidedPrediction(const Tensor& z, const std::vector<double>& t)>;

// Ψ(z_s; t_s → t_e) for every sample; at_s is the teacher's prediction at (z_s, t_s), already computed.
Tensor teacher_solve(OdeSolver solver, const NoiseSchedule& s, const GuidedTeacher& teacher, const Tensor& z_s,
                     const GuidedPrediction& at_s, const std::vector<int>& t_s, const std::vector<int>& t_e);

}  // namespace lcd
