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

// The consistency function f(z, t): c_skip(t) z + c_out(t) x̂0 (LCD), or PCM's DDIM jump to the sample's
// lower phase edge, √ᾱ_e x̂0 + √(1 − ᾱ_e) ε̂.
Tensor consistency_output(const NoiseSchedule& s, const Tensor& net_out, const Tensor& z, const std::vector<int>& t,
                          const std::vector<int>& edge) {
  Tensor x0 = predicted_x0(s, net_out, z, t);  // (B, C, H, W)
  if (edge.empty())
    return add(mul(per_sample_of(t, [](int ti) { return boundary_scalings(ti).c_skip; }), z),
               mul(per_sample_of(t, [](int ti) { return boundary_scalings(ti).c_out; }), x0));
  Tensor eps = predicted_eps(s, net_out, z, t);
  return add(mul(per_sample_of(edge, [&](int e) { return s.alpha(e); }), x0),
             mul(per_sample_of(edge, [&](int e) { return s.sigma(e); }), eps));
}

template <typename V>
V part_of(const V& v, int64_t begin, int64_t count) {
  return V(v.begin() + begin, v.begin() + begin + count);
}

}  // namespace

int draw_grid_index(Rng& rng, const LcdSettings& settings) {
  const int N = settings.num_ddim_timesteps;
  const int j = static_cast<int>(rng.uniform_int(N));
  if (settings.top_step_fraction > 0 && rng.uniform() < settings.top_step_fraction) return N - 1;
  return j;
}

LcdTargets lcd_targets(const UNet2DConditionModel& unet, TrainableLora& lora, const NoiseSchedule& s,
                       const LcdSettings& settings, const LcdBatch& b) {
  NoGradGuard no_grad;
  const int64_t n = b.z0.size(0);
  const int T = s.num_train_timesteps(), N = settings.num_ddim_timesteps;
  const std::vector<int> grid = lcd_grid(N, T);
  const int k = T / N;
  LcdTargets out;
  // 1. Grid times t_s = grid[j], t_e = max(t_s − k, 0) (for PCM, the phase's lower edge bounds t_e from below;
  //    it is a grid point or 0, so the same t_e).
  for (int64_t i = 0; i < n; ++i) {
    if (b.j[i] < 0 || b.j[i] >= N) throw ValueError("grid index out of range");
    out.t_s.push_back(grid[b.j[i]]);
    out.t_e.push_back(std::max(grid[b.j[i]] - k, 0));
    if (settings.phases > 0) out.edge.push_back(pcm_lower_edge(b.j[i], settings.phases, N, T));
  }
  // 2. Forward noising.
  const Tensor a_s = per_sample_of(out.t_s, [&](int t) { return s.alpha(t); });
  const Tensor sg_s = per_sample_of(out.t_s, [&](int t) { return s.sigma(t); });
  out.z_s = add(mul(a_s, b.z0), mul(sg_s, b.eps));  // (B, C, H, W)

  if (settings.teacher_free) {
    // 4. LCF: the same noise further along the forward process.
    out.z_e = add(mul(per_sample_of(out.t_e, [&](int t) { return s.alpha(t); }), b.z0),
                  mul(per_sample_of(out.t_e, [&](int t) { return s.sigma(t); }), b.eps));
  } else {
    // 4. Teacher (base only), cond and uncond in one pass at every point the solver evaluates.
    lora.use(TrainableLora::Mode::kTeacher);
    const Tensor w = per_sample(b.guidance);
    auto guided = [&](const Tensor& z, const std::vector<double>& t, bool keep_eps) {
      std::vector<double> a, sg;
      for (double ti : t) {
        a.push_back(s.alpha_at(ti));
        sg.push_back(s.sigma_at(ti));
      }
      Tensor both = unet.forward_pair(z, t, b.cond, b.uncond);  // (2B, C, H, W): cond rows, then uncond
      Tensor raw_c = slice(both, 0, 0, n), raw_u = slice(both, 0, n, n);
      Tensor x0_c = predicted_x0_at(s, raw_c, z, a, sg), x0_u = predicted_x0_at(s, raw_u, z, a, sg);
      Tensor eps_c = predicted_eps_at(s, raw_c, z, a, sg), eps_u = predicted_eps_at(s, raw_u, z, a, sg);
      if (keep_eps) {
        out.eps_cond = eps_c;
        out.eps_uncond = eps_u;
      }
      return GuidedPrediction{add(x0_u, mul(w, sub(x0_c, x0_u))), add(eps_u, mul(w, sub(eps_c, eps_u)))};
    };
    const GuidedPrediction at_s = guided(out.z_s, as_double(out.t_s), true);
    out.z_e = teacher_solve(settings.solver, s, [&](const Tensor& z, const std::vector<double>& t) { return guided(z, t, false); },
                            out.z_s, at_s, out.t_s, out.t_e);
  }

  // 5. Target: base + EMA LoRA; for PCM, z_e itself where t_e is already the phase's lower edge.
  if (settings.guidance_embedding) {
    std::vector<double> w;
    for (double g : b.guidance) w.push_back(g - 1.0);
    out.w_embedding = guidance_scale_embedding(w, settings.guidance_embedding_dim);  // (B, dim)
  }
  lora.use(TrainableLora::Mode::kTarget);
  out.target = consistency_output(s, unet.forward(out.z_e, as_double(out.t_e), b.cond, out.w_embedding), out.z_e,
                                  out.t_e, out.edge);
  if (!out.edge.empty()) {
    std::vector<double> at_edge, inside;
    for (int64_t i = 0; i < n; ++i) {
      at_edge.push_back(out.t_e[i] == out.edge[i] ? 1.0 : 0.0);
      inside.push_back(1.0 - at_edge.back());
    }
    out.target = add(mul(per_sample(at_edge), out.z_e), mul(per_sample(inside), out.target));
  }
  lora.use(TrainableLora::Mode::kStudent);
  return out;
}

LcdStudentPart lcd_student(const UNet2DConditionModel& unet, const NoiseSchedule& s, const LcdSettings& settings,
                           const LcdBatch& b, const LcdTargets& tg, int64_t begin, int64_t count) {
  const double share = b.weight * static_cast<double>(count) / static_cast<double>(b.z0.size(0));
  const std::vector<int> t_s = part_of(tg.t_s, begin, count), edge = tg.edge.empty() ? tg.edge : part_of(tg.edge, begin, count);
  Tensor z_s, target, cond, w_embedding;
  {
    NoGradGuard no_grad;
    z_s = slice(tg.z_s, 0, begin, count);        // (count, C, H, W)
    target = slice(tg.target, 0, begin, count);  // (count, C, H, W)
    cond = slice(b.cond, 0, begin, count);       // (count, L, D)
    if (tg.w_embedding.defined()) w_embedding = slice(tg.w_embedding, 0, begin, count);  // (count, dim)
  }
  // 3. Student, with grad through the online LoRA only.
  LcdStudentPart out;
  out.pred = consistency_output(s, unet.forward(z_s, as_double(t_s), cond, w_embedding), z_s, t_s, edge);
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
  out.edge = tg.edge;
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
