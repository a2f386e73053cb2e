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
  if (c.guidance == 1.0) return unet.forward(z, std::vector<double>(b, t), c.cond);
  if (!c.uncond.defined()) throw ValueError("guidance scale " + std::to_string(c.guidance) + " needs an unconditional embedding");
  // One UNet pass over [uncond; cond], as diffusers batches it.
  Tensor both = unet.forward(concat(std::vector<Tensor>{z, z}, 0), std::vector<double>(2 * b, t),
                             concat(std::vector<Tensor>{repeat_rows(c.uncond, b), c.cond}, 0));
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

Tensor run_sampler(const std::string& name, const NoiseSchedule& s, const Denoiser& model, const Tensor& z, int steps,
                   BatchNoise& noise) {
  if (name == "lcm") return lcm_sample(s, model, z, steps, noise);
  if (name == "ddim") return ddim_sample(s, model, z, steps);
  if (name == "dpmpp-2m") return dpmpp_2m_sample(s, model, z, steps);
  throw ValueError("unknown sampler \"" + name + "\" (lcm, ddim or dpmpp-2m)");
}

}  // namespace lcd
