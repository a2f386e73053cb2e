// The LCD step (see lcd_objective.h; DESIGN.md §4, reference/lcd-spec.md §2–§5).
#include "train/lcd_objective.h"

#include <cmath>

#include "autograd/batch_parallel.h"
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
  Tensor x0 = predicted_x0(s, net_out, z, t);  // (B, C, H, W)
  return add(mul(per_sample_of(t, [](int ti) { return boundary_scalings(ti).c_skip; }), z),
             mul(per_sample_of(t, [](int ti) { return boundary_scalings(ti).c_out; }), x0));
}

template <typename V>
V part_of(const V& v, int64_t begin, int64_t count) {
  return V(v.begin() + begin, v.begin() + begin + count);
}

}  // namespace

LcdTargets lcd_targets(const UNet2DConditionModel& unet, TrainableLora& lora, const NoiseSchedule& s,
                       const LcdSettings& settings, const LcdBatch& b) {
  NoGradGuard no_grad;
  const int64_t n = b.z0.size(0);
  const int T = s.num_train_timesteps();
  const std::vector<int> grid = lcd_grid(settings.num_ddim_timesteps, T);
  const int k = T / settings.num_ddim_timesteps;
  LcdTargets out;
  std::vector<double> acp_prev;
  // 1. Grid times t_s = grid[j], t_e = max(t_s − k, 0).
  for (int64_t i = 0; i < n; ++i) {
    if (b.j[i] < 0 || b.j[i] >= settings.num_ddim_timesteps) throw ValueError("grid index out of range");
    out.t_s.push_back(grid[b.j[i]]);
    out.t_e.push_back(std::max(grid[b.j[i]] - k, 0));
    acp_prev.push_back(b.j[i] > 0 ? s.alphas_cumprod[grid[b.j[i] - 1]] : s.alphas_cumprod[0]);
  }
  // 2. Forward noising.
  out.z_s = add(mul(per_sample_of(out.t_s, [&](int t) { return s.alpha(t); }), b.z0),
                mul(per_sample_of(out.t_s, [&](int t) { return s.sigma(t); }), b.eps));  // (B, C, H, W)

  // 4. Teacher, cond and uncond in one pass.
  lora.use(TrainableLora::Mode::kTeacher);
  std::vector<double> t2 = as_double(out.t_s);
  t2.insert(t2.end(), t2.begin(), t2.end());
  Tensor both = unet.forward(concat(std::vector<Tensor>{out.z_s, out.z_s}, 0), t2,
                             concat(std::vector<Tensor>{b.cond, b.uncond}, 0));  // (2B, C, H, W)
  Tensor raw_c = slice(both, 0, 0, n), raw_u = slice(both, 0, n, n);
  Tensor x0_c = predicted_x0(s, raw_c, out.z_s, out.t_s), x0_u = predicted_x0(s, raw_u, out.z_s, out.t_s);
  out.eps_cond = predicted_eps(s, raw_c, out.z_s, out.t_s);
  out.eps_uncond = predicted_eps(s, raw_u, out.z_s, out.t_s);
  const Tensor w = per_sample(b.guidance);
  Tensor X = add(x0_u, mul(w, sub(x0_c, x0_u)));
  Tensor E = add(out.eps_uncond, mul(w, sub(out.eps_cond, out.eps_uncond)));
  if (settings.solver != OdeSolver::kDdim) throw ConfigError("lcd.solver: only \"ddim\" is implemented so far");
  std::vector<double> a, sg;
  for (double v : acp_prev) {
    a.push_back(std::sqrt(v));
    sg.push_back(std::sqrt(1.0 - v));
  }
  out.z_e = add(mul(per_sample(a), X), mul(per_sample(sg), E));  // Ψ_DDIM

  // 5. Target: base + EMA LoRA.
  lora.use(TrainableLora::Mode::kTarget);
  out.target = consistency_output(s, unet.forward(out.z_e, as_double(out.t_e), b.cond), out.z_e, out.t_e);
  lora.use(TrainableLora::Mode::kStudent);
  return out;
}

LcdStudentPart lcd_student(const UNet2DConditionModel& unet, const NoiseSchedule& s, const LcdSettings& settings,
                           const LcdBatch& b, const LcdTargets& tg, int64_t begin, int64_t count) {
  const double share = static_cast<double>(count) / static_cast<double>(b.z0.size(0));
  const std::vector<int> t_s = part_of(tg.t_s, begin, count);
  Tensor z_s, target, cond;
  {
    NoGradGuard no_grad;
    z_s = slice(tg.z_s, 0, begin, count);        // (count, C, H, W)
    target = slice(tg.target, 0, begin, count);  // (count, C, H, W)
    cond = slice(b.cond, 0, begin, count);       // (count, L, D)
  }
  // 3. Student, with grad through the online LoRA only.
  LcdStudentPart out;
  out.pred = consistency_output(s, unet.forward(z_s, as_double(t_s), cond), z_s, t_s);
  // 6. Loss: this part's share of the batch mean.
  Tensor part_mean = settings.loss == LossType::kHuber ? pseudo_huber_loss(out.pred, target, settings.huber_c)
                                                       : mse_loss(out.pred, target);
  out.loss = scale(part_mean, share);
  NoGradGuard no_grad;
  out.loss_huber = share * pseudo_huber_loss(out.pred, target, settings.huber_c).item();
  out.loss_l2 = share * mse_loss(out.pred, target).item();
  return out;
}

LcdStep lcd_forward(const UNet2DConditionModel& unet, TrainableLora& lora, const NoiseSchedule& s,
                    const LcdSettings& settings, const LcdBatch& b) {
  LcdTargets tg = lcd_targets(unet, lora, s, settings, b);
  LcdStudentPart st = lcd_student(unet, s, settings, b, tg, 0, b.z0.size(0));
  LcdStep out;
  out.t_s = tg.t_s;
  out.t_e = tg.t_e;
  out.z_s = tg.z_s;
  out.eps_cond = tg.eps_cond;
  out.eps_uncond = tg.eps_uncond;
  out.z_e = tg.z_e;
  out.target = tg.target;
  out.pred = st.pred;
  out.loss = st.loss;
  out.loss_huber = Tensor::full({}, static_cast<float>(st.loss_huber));
  out.loss_l2 = Tensor::full({}, static_cast<float>(st.loss_l2));
  return out;
}

LcdLosses lcd_loss_and_gradients(const UNet2DConditionModel& unet, TrainableLora& lora, const NoiseSchedule& s,
                                 const LcdSettings& settings, const LcdBatch& b) {
  const int64_t n = b.z0.size(0);
  const LcdTargets tg = lcd_targets(unet, lora, s, settings, b);
  std::vector<double> huber(n), l2(n);  // indexed by each part's first sample
  LcdLosses out;
  out.loss = parallel_backward(lora.online(), n, [&](int64_t begin, int64_t count) {
    LcdStudentPart part = lcd_student(unet, s, settings, b, tg, begin, count);
    huber[begin] = part.loss_huber;
    l2[begin] = part.loss_l2;
    return part.loss;
  });
  for (int64_t i = 0; i < n; ++i) {
    out.loss_huber += huber[i];
    out.loss_l2 += l2[i];
  }
  return out;
}

}  // namespace lcd
