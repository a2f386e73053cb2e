// Schedules, grids and prediction conversions (see schedule.h).
#include "infer/schedule.h"

#include <cmath>

#include "autograd/errors.h"
#include "autograd/ops.h"
#include "infer/nn/config_check.h"

namespace lcd {

PredictionType parse_prediction_type(const std::string& name) {
  if (name == "epsilon") return PredictionType::kEpsilon;
  if (name == "v_prediction") return PredictionType::kVPrediction;
  if (name == "sample") return PredictionType::kSample;
  throw ConfigError("unknown prediction_type \"" + name + "\" (epsilon, v_prediction or sample)");
}

static void check_t(const NoiseSchedule& s, int t) {
  if (t < 0 || t >= s.num_train_timesteps())
    throw ValueError("timestep " + std::to_string(t) + " outside 0.." + std::to_string(s.num_train_timesteps() - 1));
}

double NoiseSchedule::alpha(int t) const {
  check_t(*this, t);
  return std::sqrt(alphas_cumprod[t]);
}

double NoiseSchedule::sigma(int t) const {
  check_t(*this, t);
  return std::sqrt(1.0 - alphas_cumprod[t]);
}

double NoiseSchedule::alpha_at(double t) const {
  const int last = num_train_timesteps() - 1;
  if (!(t >= 0 && t <= last)) throw ValueError("time " + std::to_string(t) + " outside [0, " + std::to_string(last) + "]");
  const int i = std::min(static_cast<int>(std::floor(t)), last - 1);
  const double f = t - i;
  const double log_a = 0.5 * ((1 - f) * std::log(alphas_cumprod[i]) + f * std::log(alphas_cumprod[i + 1]));
  return std::exp(log_a);
}

double NoiseSchedule::sigma_at(double t) const {
  const double a = alpha_at(t);
  return std::sqrt(1.0 - a * a);
}

double NoiseSchedule::lambda_at(double t) const { return std::log(alpha_at(t)) - std::log(sigma_at(t)); }

double NoiseSchedule::time_of_lambda(double lambda) const {
  double lo = 0, hi = num_train_timesteps() - 1;  // λ(lo) ≥ λ ≥ λ(hi)
  if (!(lambda <= lambda_at(lo) && lambda >= lambda_at(hi)))
    throw ValueError("λ = " + std::to_string(lambda) + " outside the schedule's range");
  for (int i = 0; i < 60; ++i) {
    const double mid = 0.5 * (lo + hi);
    (lambda_at(mid) > lambda ? lo : hi) = mid;
  }
  return 0.5 * (lo + hi);
}

static NoiseSchedule from_betas(const std::vector<double>& betas) {
  NoiseSchedule s;
  double prod = 1.0;
  for (double b : betas) {
    prod *= 1.0 - b;
    s.alphas_cumprod.push_back(prod);
  }
  return s;
}

NoiseSchedule NoiseSchedule::scaled_linear(int T, double beta_start, double beta_end) {
  std::vector<double> betas(T);
  const double a = std::sqrt(beta_start), b = std::sqrt(beta_end);
  for (int i = 0; i < T; ++i) {
    const double r = a + i * (b - a) / (T - 1);
    betas[i] = r * r;
  }
  return from_betas(betas);
}

NoiseSchedule NoiseSchedule::linear(int T, double beta_start, double beta_end) {
  std::vector<double> betas(T);
  for (int i = 0; i < T; ++i) betas[i] = beta_start + i * (beta_end - beta_start) / (T - 1);
  return from_betas(betas);
}

NoiseSchedule NoiseSchedule::from_config(const nlohmann::json& c, const std::string& origin) {
  auto field = [&](const char* key, const auto& fallback) { return config_field(c, key, fallback, origin); };
  const int T = field("num_train_timesteps", 1000);
  const double b0 = field("beta_start", 0.0001), b1 = field("beta_end", 0.02);
  const std::string kind = field("beta_schedule", std::string("linear"));
  if (c.contains("trained_betas") && !c["trained_betas"].is_null())
    throw ConfigError(origin + ": unsupported field \"trained_betas\"");
  if (field("rescale_betas_zero_snr", false))
    throw ConfigError(origin + ": unsupported field \"rescale_betas_zero_snr\" = true");
  if (T < 2 || T > 100000) throw ConfigError(origin + ": field \"num_train_timesteps\" = " + std::to_string(T) + ": must be 2..100000");
  if (!(b0 > 0 && b0 <= b1 && b1 < 1))
    throw ConfigError(origin + ": fields \"beta_start\" = " + std::to_string(b0) + " and \"beta_end\" = " + std::to_string(b1) +
                      ": need 0 < beta_start ≤ beta_end < 1");
  NoiseSchedule s;
  if (kind == "scaled_linear")
    s = scaled_linear(T, b0, b1);
  else if (kind == "linear")
    s = linear(T, b0, b1);
  else
    throw ConfigError(origin + ": unsupported field \"beta_schedule\" = \"" + kind + "\"");
  try {
    s.prediction = parse_prediction_type(field("prediction_type", std::string("epsilon")));
  } catch (const ConfigError& e) {
    throw ConfigError(origin + ": " + e.what());
  }
  return s;
}

BoundaryScalings boundary_scalings(int t, double sigma_data, double timestep_scaling) {
  const double s = timestep_scaling * t, sd2 = sigma_data * sigma_data;
  return {sd2 / (s * s + sd2), s / std::sqrt(s * s + sd2)};
}

std::vector<int> lcd_grid(int n, int T) {
  if (n < 1 || T % n != 0)
    throw ConfigError("num_ddim_timesteps " + std::to_string(n) + " must divide " + std::to_string(T));
  std::vector<int> grid(n);
  for (int j = 0; j < n; ++j) grid[j] = (j + 1) * (T / n) - 1;
  return grid;
}

std::vector<int> pcm_phase_starts(int phases, int n) {
  if (phases < 1 || phases > n)
    throw ValueError("PCM phases must be 1.." + std::to_string(n) + ", got " + std::to_string(phases));
  std::vector<int> starts(phases);
  for (int m = 0; m < phases; ++m) starts[m] = (m * n) / phases;  // ⌊linspace(0, N, M, endpoint=False)⌋
  return starts;
}

int pcm_lower_edge(int j, int phases, int n, int T) {
  if (j < 0 || j >= n) throw ValueError("grid index " + std::to_string(j) + " is outside 0.." + std::to_string(n - 1));
  const std::vector<int> starts = pcm_phase_starts(phases, n);
  int start = 0;
  for (int s : starts)
    if (s <= j) start = s;
  return start > 0 ? lcd_grid(n, T)[start - 1] : 0;
}

std::vector<int> lcm_timesteps(int steps, int original_steps, int T) {
  if (steps < 1 || steps > original_steps)
    throw ValueError("LCM steps must be 1.." + std::to_string(original_steps) + ", got " + std::to_string(steps));
  std::vector<int> grid = lcd_grid(original_steps, T);
  std::vector<int> out(steps);
  for (int i = 0; i < steps; ++i) out[i] = grid[original_steps - 1 - (i * original_steps) / steps];
  return out;
}

std::vector<int> ddim_timesteps(int steps, int T, int steps_offset) {
  if (steps < 1 || steps > T) throw ValueError("DDIM steps must be 1.." + std::to_string(T));
  std::vector<int> out(steps);
  for (int i = 0; i < steps; ++i) out[i] = (steps - 1 - i) * (T / steps) + steps_offset;
  return out;
}

std::vector<int> dpmpp_timesteps(int steps, int T, int steps_offset) {
  if (steps < 1 || steps >= T) throw ValueError("DPM-Solver++ steps must be 1.." + std::to_string(T - 1));
  const int ratio = T / (steps + 1);
  std::vector<int> out(steps);
  for (int i = 0; i < steps; ++i) out[i] = (steps - i) * ratio + steps_offset;
  return out;
}

Tensor per_sample(const std::vector<double>& values) {
  Tensor t = Tensor::empty({static_cast<int64_t>(values.size()), 1, 1, 1});
  for (size_t i = 0; i < values.size(); ++i) t.data()[i] = static_cast<float>(values[i]);
  return t;
}

static std::vector<double> gather(const NoiseSchedule& s, const std::vector<int>& t, bool alpha) {
  std::vector<double> v;
  for (int ti : t) v.push_back(alpha ? s.alpha(ti) : s.sigma(ti));
  return v;
}

Tensor predicted_x0_at(const NoiseSchedule& s, const Tensor& out, const Tensor& z, const std::vector<double>& alpha,
                       const std::vector<double>& sigma) {
  const Tensor a = per_sample(alpha), sg = per_sample(sigma);
  switch (s.prediction) {
    case PredictionType::kEpsilon: return div(sub(z, mul(sg, out)), a);  // (z − σ ε)/α
    case PredictionType::kVPrediction: return sub(mul(a, z), mul(sg, out));  // α z − σ v
    case PredictionType::kSample: return out;
  }
  return out;
}

Tensor predicted_eps_at(const NoiseSchedule& s, const Tensor& out, const Tensor& z, const std::vector<double>& alpha,
                        const std::vector<double>& sigma) {
  const Tensor a = per_sample(alpha), sg = per_sample(sigma);
  switch (s.prediction) {
    case PredictionType::kEpsilon: return out;
    case PredictionType::kVPrediction: return add(mul(a, out), mul(sg, z));  // α v + σ z
    case PredictionType::kSample: return div(sub(z, mul(a, out)), sg);       // (z − α x0)/σ
  }
  return out;
}

Tensor predicted_x0(const NoiseSchedule& s, const Tensor& out, const Tensor& z, const std::vector<int>& t) {
  return predicted_x0_at(s, out, z, gather(s, t, true), gather(s, t, false));
}

Tensor predicted_eps(const NoiseSchedule& s, const Tensor& out, const Tensor& z, const std::vector<int>& t) {
  return predicted_eps_at(s, out, z, gather(s, t, true), gather(s, t, false));
}

}  // namespace lcd
