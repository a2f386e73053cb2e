// Ψ (see teacher_solver.h).
#include "train/teacher_solver.h"

#include <cmath>

#include "autograd/errors.h"
#include "autograd/ops.h"

namespace lcd {

OdeSolver parse_ode_solver(const std::string& name) {
  if (name == "ddim") return OdeSolver::kDdim;
  if (name == "dpm-solver-2") return OdeSolver::kDpmSolver2;
  if (name == "dpm-solver++2s") return OdeSolver::kDpmSolverPP2S;
  throw ConfigError("unknown solver \"" + name + "\" (ddim, dpm-solver-2 or dpm-solver++2s)");
}

int teacher_evaluations(OdeSolver solver) { return solver == OdeSolver::kDdim ? 1 : 2; }

Tensor teacher_solve(OdeSolver solver, const NoiseSchedule& s, const GuidedTeacher& teacher, const Tensor& z_s,
                     const GuidedPrediction& at_s, const std::vector<int>& t_s, const std::vector<int>& t_e) {
  NoGradGuard no_grad;
  const size_t n = t_s.size();
  std::vector<double> a_s(n), sg_s(n), a_e(n), sg_e(n), a_m(n), sg_m(n), h(n), t_m(n);
  for (size_t i = 0; i < n; ++i) {
    a_s[i] = s.alpha(t_s[i]);
    sg_s[i] = s.sigma(t_s[i]);
    a_e[i] = s.alpha(t_e[i]);
    sg_e[i] = s.sigma(t_e[i]);
    const double l_s = std::log(a_s[i] / sg_s[i]);
    h[i] = std::log(a_e[i] / sg_e[i]) - l_s;
    if (solver != OdeSolver::kDdim) {
      t_m[i] = s.time_of_lambda(l_s + 0.5 * h[i]);
      a_m[i] = s.alpha_at(t_m[i]);
      sg_m[i] = s.sigma_at(t_m[i]);
    }
  }
  auto coefficients = [&](auto f) {
    std::vector<double> v(n);
    for (size_t i = 0; i < n; ++i) v[i] = f(i);
    return per_sample(v);  // (B, 1, 1, 1)
  };
  switch (solver) {
    case OdeSolver::kDdim:
      return add(mul(per_sample(a_e), at_s.x0), mul(per_sample(sg_e), at_s.eps));
    case OdeSolver::kDpmSolver2: {
      Tensor u = sub(mul(coefficients([&](size_t i) { return a_m[i] / a_s[i]; }), z_s),
                     mul(coefficients([&](size_t i) { return sg_m[i] * std::expm1(0.5 * h[i]); }), at_s.eps));
      const GuidedPrediction mid = teacher(u, t_m);
      return sub(mul(coefficients([&](size_t i) { return a_e[i] / a_s[i]; }), z_s),
                 mul(coefficients([&](size_t i) { return sg_e[i] * std::expm1(h[i]); }), mid.eps));
    }
    case OdeSolver::kDpmSolverPP2S: {
      Tensor u = sub(mul(coefficients([&](size_t i) { return sg_m[i] / sg_s[i]; }), z_s),
                     mul(coefficients([&](size_t i) { return a_m[i] * std::expm1(-0.5 * h[i]); }), at_s.x0));
      const GuidedPrediction mid = teacher(u, t_m);
      return sub(mul(coefficients([&](size_t i) { return sg_e[i] / sg_s[i]; }), z_s),
                 mul(coefficients([&](size_t i) { return a_e[i] * std::expm1(-h[i]); }), mid.x0));
    }
  }
  throw ValueError("unknown solver");
}

}  // namespace lcd
