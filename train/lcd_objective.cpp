// The LCD step (see lcd_objective.h; DESIGN.md §4, reference/lcd-spec.md §2–§5).
#include "train/lcd_objective.h"

#include <cmath>

#include "autograd/errors.h"
#include "autograd/ops.h"

namespace lcd {

namespace {

std::vector<double> as_double(const std::vector<int>& t) { return std::vector<double>(t.begin(), t.end()); }

// Per-sample scalars f(t_i) as a (B,1,1,1) tensor.
template <typename F>
Tensor per_sample_of(const std::vector<int>& t, F f) {
  std::vector<double> v;
  for (int ti : t) v.push_back(f(ti));
  return per_sample(v);
}

// f(z, t) = c_skip(t) z + c_out(t) x̂0: the consistency function's boundary parameterisation.
Tensor consistency_output(const NoiseSchedule& s, const Tensor& net_out, const Tensor& z, const std::vector<int>& t) {
  Tensor x0 = predicted_x0(s, net_out, z, t);
  return add(mul(per_sample_of(t, [](int ti) { return boundary_scalings(ti).c_skip; }), z),
             mul(per_sample_of(t, [](int ti) { return boundary_scalings(ti).c_out; }), x0));
}

}  // namespace

LcdStep lcd_forward(const UNet2DConditionModel& unet, TrainableLora& lora, const NoiseSchedule& s,
                    const LcdSettings& settings, const LcdBatch& b) {
  const int64_t n = b.z0.size(0);
  const int T = s.num_train_timesteps();
  const std::vector<int> grid = lcd_grid(settings.num_ddim_timesteps, T);
  const int k = T / settings.num_ddim_timesteps;
  LcdStep out;
  std::vector<double> acp_prev;
  for (int64_t i = 0; i < n; ++i) {
    if (b.j[i] < 0 || b.j[i] >= settings.num_ddim_timesteps) throw ValueError("grid index out of range");
    out.t_s.push_back(grid[b.j[i]]);
    out.t_e.push_back(std::max(grid[b.j[i]] - k, 0));
    acp_prev.push_back(b.j[i] > 0 ? s.alphas_cumprod[grid[b.j[i] - 1]] : s.alphas_cumprod[0]);
  }
  // 2. Forward noising.
  out.z_s = add(mul(per_sample_of(out.t_s, [&](int t) { return s.alpha(t); }), b.z0),
                mul(per_sample_of(out.t_s, [&](int t) { return s.sigma(t); }), b.eps));

  // 4. Teacher, cond and uncond in one pass, no grad.
  {
    NoGradGuard no_grad;
    lora.use(TrainableLora::Mode::kTeacher);
    std::vector<double> t2 = as_double(out.t_s);
    t2.insert(t2.end(), t2.begin(), t2.end());
    Tensor both = unet.forward(concat(std::vector<Tensor>{out.z_s, out.z_s}, 0), t2,
                               concat(std::vector<Tensor>{b.cond, b.uncond}, 0));
    Tensor raw_c = slice(both, 0, 0, n), raw_u = slice(both, 0, n, n);
    Tensor x0_c = predicted_x0(s, raw_c, out.z_s, out.t_s), x0_u = predicted_x0(s, raw_u, out.z_s, out.t_s);
    out.eps_cond = predicted_eps(s, raw_c, out.z_s, out.t_s);
    out.eps_uncond = predicted_eps(s, raw_u, out.z_s, out.t_s);
    const Tensor w = per_sample(b.guidance);
    Tensor X = add(x0_u, mul(w, sub(x0_c, x0_u)));
    Tensor E = add(out.eps_uncond, mul(w, sub(out.eps_cond, out.eps_uncond)));
    if (settings.solver != OdeSolver::kDdim)
      throw ConfigError("lcd.solver: only \"ddim\" is implemented so far");
    std::vector<double> a, sg;
    for (double v : acp_prev) {
      a.push_back(std::sqrt(v));
      sg.push_back(std::sqrt(1.0 - v));
    }
    out.z_e = add(mul(per_sample(a), X), mul(per_sample(sg), E));

    // 5. Target: base + EMA LoRA, no grad.
    lora.use(TrainableLora::Mode::kTarget);
    out.target = consistency_output(s, unet.forward(out.z_e, as_double(out.t_e), b.cond), out.z_e, out.t_e);
  }
  // 3. Student, with grad through the online LoRA only.
  lora.use(TrainableLora::Mode::kStudent);
  out.pred = consistency_output(s, unet.forward(out.z_s, as_double(out.t_s), b.cond), out.z_s, out.t_s);

  // 6. Loss.
  out.loss = settings.loss == LossType::kHuber ? pseudo_huber_loss(out.pred, out.target, settings.huber_c)
                                               : mse_loss(out.pred, out.target);
  {
    NoGradGuard no_grad;
    out.loss_huber = pseudo_huber_loss(out.pred, out.target, settings.huber_c);
    out.loss_l2 = mse_loss(out.pred, out.target);
  }
  return out;
}

}  // namespace lcd
