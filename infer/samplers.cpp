// Samplers (see samplers.h).
#include "infer/samplers.h"

#include <cmath>

#include "autograd/errors.h"
#include "autograd/ops.h"

namespace lcd {

// a·x + b·y for scalars a, b.
static Tensor lincomb(double a, const Tensor& x, double b, const Tensor& y) { return add(scale(x, a), scale(y, b)); }

static Tensor repeat_rows(const Tensor& x, int64_t batch) {
  if (x.size(0) == batch) return x;
  if (x.size(0) != 1)
    throw ShapeError("unconditional embedding " + x.shape().str() + " must have 1 or " + std::to_string(batch) + " rows");
  return concat(std::vector<Tensor>(batch, x), 0);
}

Tensor guided_output(const UNet2DConditionModel& unet, const Tensor& z, int t, const Conditioning& c) {
  const int64_t b = z.size(0);
  if (unet.config.time_cond_proj_dim > 0)  // guidance distilled into the model: its embedding of w = s − 1, one pass
    return unet.forward(z, std::vector<double>(b, t), c.cond,
                        guidance_scale_embedding(std::vector<double>(b, c.guidance - 1.0), unet.config.time_cond_proj_dim));
  if (c.guidance == 1.0) return unet.forward(z, std::vector<double>(b, t), c.cond);
  if (!c.uncond.defined()) throw ValueError("guidance scale " + std::to_string(c.guidance) + " needs an unconditional embedding");
  // One UNet pass over [uncond; cond], as diffusers batches it (its layers before the first cross-attention once).
  Tensor both = unet.forward_pair(z, std::vector<double>(b, t), repeat_rows(c.uncond, b), c.cond);
  Tensor eps_u = slice(both, 0, 0, b), eps_c = slice(both, 0, b, b);
  return add(eps_u, scale(sub(eps_c, eps_u), c.guidance));  // ε_u + s(ε_c − ε_u)
}

Denoiser unet_denoiser(const UNet2DConditionModel& unet, Conditioning c) {
  return [&unet, c](const Tensor& z, int t) { return guided_output(unet, z, t, c); };
}

Tensor ddim_sample(const NoiseSchedule& s, const Denoiser& model, Tensor z, int steps, int steps_offset) {
  NoGradGuard no_grad;
  const int T = s.num_train_timesteps();
  for (int t : ddim_timesteps(steps, T, steps_offset)) {
    const std::vector<int> ts(z.size(0), t);
    Tensor out = model(z, t);
    Tensor x0 = predicted_x0(s, out, z, ts), eps = predicted_eps(s, out, z, ts);
    const int prev = t - T / steps;
    const double a_prev = prev >= 0 ? s.alphas_cumprod[prev] : s.alphas_cumprod[0];
    z = lincomb(std::sqrt(a_prev), x0, std::sqrt(1.0 - a_prev), eps);  // √ᾱ_prev x̂0 + √(1−ᾱ_prev) ε̂
  }
  return z;
}

Tensor dpmpp_2m_sample(const NoiseSchedule& s, const Denoiser& model, Tensor z, int steps, int steps_offset) {
  NoGradGuard no_grad;
  const std::vector<int> ts = dpmpp_timesteps(steps, s.num_train_timesteps(), steps_offset);
  // σ_i = √((1−ᾱ)/ᾱ) at each timestep, then a final σ = 0; α_t = 1/√(σ²+1), σ_t = σ·α_t, λ = ln α_t − ln σ_t.
  std::vector<double> sig;
  for (int t : ts) sig.push_back(std::sqrt((1.0 - s.alphas_cumprod[t]) / s.alphas_cumprod[t]));
  sig.push_back(0.0);
  auto alpha_of = [](double sg) { return 1.0 / std::sqrt(sg * sg + 1.0); };
  auto lambda_of = [&](double sg) { return std::log(alpha_of(sg)) - std::log(sg * alpha_of(sg)); };
  Tensor x0_prev;
  for (int i = 0; i < steps; ++i) {
    Tensor x0 = predicted_x0(s, model(z, ts[i]), z, std::vector<int>(z.size(0), ts[i]));
    const double s0 = sig[i], s1 = sig[i + 1];
    const double a1 = alpha_of(s1), sigma_t1 = s1 * a1, sigma_t0 = s0 * alpha_of(s0);
    const double h = lambda_of(s1) - lambda_of(s0);  // +∞ at the final σ = 0: exp(−h) = 0
    const double decay = std::exp(-h) - 1.0;
    const bool first_order = i == 0 || i == steps - 1;
    if (first_order) {
      z = lincomb(sigma_t1 / sigma_t0, z, -a1 * decay, x0);  // (σ_t/σ_s) z − α_t (e^{−h} − 1) x̂0
    } else {
      const double h0 = lambda_of(s0) - lambda_of(sig[i - 1]), r0 = h0 / h;
      Tensor d1 = scale(sub(x0, x0_prev), 1.0 / r0);  // D1 = (m0 − m1)/r0
      z = add(lincomb(sigma_t1 / sigma_t0, z, -a1 * decay, x0), scale(d1, -0.5 * a1 * decay));
    }
    x0_prev = x0;
  }
  return z;
}

BatchNoise::BatchNoise(uint64_t seed, int64_t first_sample, int64_t count) {
  for (int64_t i = 0; i < count; ++i) {
    // splitmix64 of (seed, index): well-separated streams for neighbouring seeds and indices
    uint64_t z = seed * 0x9E3779B97F4A7C15ull + static_cast<uint64_t>(first_sample + i) + 0x632BE59BD9B4E019ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    streams_.emplace_back(z ^ (z >> 31));
  }
}

Tensor BatchNoise::draw(const Shape& shape) {
  if (shape.rank() < 1 || shape[0] != static_cast<int64_t>(streams_.size()))
    throw ShapeError("noise of shape " + shape.str() + " for " + std::to_string(streams_.size()) + " samples");
  Tensor t = Tensor::empty(shape);
  const int64_t per = t.numel() / shape[0];
  for (size_t i = 0; i < streams_.size(); ++i)
    for (int64_t k = 0; k < per; ++k) t.data()[i * per + k] = static_cast<float>(streams_[i].normal());
  return t;
}

Tensor lcm_sample(const NoiseSchedule& s, const Denoiser& model, Tensor z, int steps, BatchNoise& noise,
                  int original_steps) {
  NoGradGuard no_grad;
  const std::vector<int> ts = lcm_timesteps(steps, original_steps, s.num_train_timesteps());
  Tensor denoised;
  for (size_t i = 0; i < ts.size(); ++i) {
    const int t = ts[i];
    Tensor x0 = predicted_x0(s, model(z, t), z, std::vector<int>(z.size(0), t));
    const BoundaryScalings b = boundary_scalings(t);
    denoised = lincomb(b.c_out, x0, b.c_skip, z);
    if (i + 1 < ts.size()) {
      const int next = ts[i + 1];
      z = lincomb(s.alpha(next), denoised, s.sigma(next), noise.draw(z.shape()));
    }
  }
  return denoised;
}

Tensor tcd_sample(const NoiseSchedule& s, const Denoiser& model, Tensor z, int steps, double gamma, BatchNoise& noise,
                  int original_steps) {
  if (!(gamma >= 0 && gamma <= 1)) throw ValueError("TCD's eta (γ) must be in [0, 1], got " + std::to_string(gamma));
  NoGradGuard no_grad;
  const std::vector<int> ts = lcm_timesteps(steps, original_steps, s.num_train_timesteps());
  for (size_t i = 0; i < ts.size(); ++i) {
    // 1. The model's x̂0 and ε̂ at t.
    const int t = ts[i], next = i + 1 < ts.size() ? ts[i + 1] : 0;
    const std::vector<int> at(z.size(0), t);
    Tensor out = model(z, t);
    Tensor x0 = predicted_x0(s, out, z, at), eps = predicted_eps(s, out, z, at);
    // 2. The jump along the trajectory to s = ⌊(1 − γ) t'⌋.
    const int ts_s = static_cast<int>(std::floor((1.0 - gamma) * next));
    const double a_s = s.alphas_cumprod[ts_s];
    Tensor x_s = lincomb(std::sqrt(a_s), x0, std::sqrt(1.0 - a_s), eps);  // (B, C, H, W)
    // 3. Noise back up to t' (not after the last step, and never for γ = 0).
    if (gamma > 0 && i + 1 < ts.size()) {
      const double r = s.alphas_cumprod[next] / a_s;
      z = lincomb(std::sqrt(r), x_s, std::sqrt(1.0 - r), noise.draw(z.shape()));
    } else {
      z = x_s;
    }
  }
  return z;
}

Tensor pcm_sample(const NoiseSchedule& s, const Denoiser& model, Tensor z, int phases, int original_steps) {
  NoGradGuard no_grad;
  const int T = s.num_train_timesteps();
  const std::vector<int> grid = lcd_grid(original_steps, T);
  const std::vector<int> starts = pcm_phase_starts(phases, original_steps);
  int j = original_steps - 1;  // the top of the last phase
  for (int m = phases - 1; m >= 0; --m) {
    const int t = grid[j], edge = pcm_lower_edge(j, phases, original_steps, T);
    const std::vector<int> at(z.size(0), t);
    Tensor out = model(z, t);
    Tensor x0 = predicted_x0(s, out, z, at), eps = predicted_eps(s, out, z, at);
    const double a = s.alphas_cumprod[edge];
    z = lincomb(std::sqrt(a), x0, std::sqrt(1.0 - a), eps);  // DDIM to the phase's lower edge
    j = starts[m] - 1;
  }
  return z;
}

namespace {

Tensor run_lcm(const NoiseSchedule& s, const Denoiser& m, const Tensor& z, const SamplerRun& r) {
  return lcm_sample(s, m, z, r.steps, *r.noise);
}
Tensor run_tcd(const NoiseSchedule& s, const Denoiser& m, const Tensor& z, const SamplerRun& r) {
  return tcd_sample(s, m, z, r.steps, r.eta, *r.noise);
}
Tensor run_pcm(const NoiseSchedule& s, const Denoiser& m, const Tensor& z, const SamplerRun& r) {
  return pcm_sample(s, m, z, r.steps);
}
Tensor run_ddim(const NoiseSchedule& s, const Denoiser& m, const Tensor& z, const SamplerRun& r) {
  return ddim_sample(s, m, z, r.steps);
}
Tensor run_dpmpp_2m(const NoiseSchedule& s, const Denoiser& m, const Tensor& z, const SamplerRun& r) {
  return dpmpp_2m_sample(s, m, z, r.steps);
}

}  // namespace

const std::vector<SamplerSpec>& sampler_table() {
  static const std::vector<SamplerSpec> table = {
      {"lcm", "LCM multistep (1-8 steps) for an LCM-LoRA", true, 4, 1.0, run_lcm},
      {"tcd", "TCD, LCM's timesteps with a stochastic jump of --eta γ (0: deterministic)", true, 4, 1.0, run_tcd},
      {"pcm", "PCM, --steps phases (the adapter's lcd.phases), deterministic", true, 4, 1.0, run_pcm},
      {"ddim", "the teacher's DDIM (η = 0) with classifier-free guidance", false, 50, 2.0, run_ddim},
      {"dpmpp-2m", "the teacher's DPM-Solver++(2M) with classifier-free guidance", false, 20, 2.0, run_dpmpp_2m},
  };
  return table;
}

std::string sampler_names() {
  std::string out;
  const auto& table = sampler_table();
  for (size_t i = 0; i < table.size(); ++i)
    out += std::string(i == 0 ? "" : i + 1 == table.size() ? " or " : ", ") + table[i].name;
  return out;
}

const SamplerSpec& find_sampler(const std::string& name) {
  for (const SamplerSpec& spec : sampler_table())
    if (name == spec.name) return spec;
  throw ValueError("unknown sampler \"" + name + "\" (" + sampler_names() + ")");
}

}  // namespace lcd
