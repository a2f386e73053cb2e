// TCD and PCM sampling against independent double-precision computations with a toy denoiser (an ε-prediction
// affine in z, recorded at every call): the timesteps each sampler visits (diffusers' TCDScheduler gives LCM's
// 999, 759, 499, 259 for 4 steps; PCM's phase edges of the 50-point grid), every update, the noise use (γ = 0
// is deterministic), and the sampler table that the tools read.
#include <gtest/gtest.h>

#include <cmath>

#include "autograd/errors.h"
#include "autograd/ops.h"
#include "infer/samplers.h"

namespace lcd {
namespace {

// ε̂(z, t) = a z + b, and the timesteps it was called at.
struct ToyModel {
  double a = 0.3, b = 0.1;
  std::vector<int> calls;
  Denoiser denoiser() {
    return [this](const Tensor& z, int t) {
      calls.push_back(t);
      return add(scale(z, a), Tensor::full(z.shape(), static_cast<float>(b)));
    };
  }
};

std::vector<double> to_double(const Tensor& t) { return std::vector<double>(t.data(), t.data() + t.numel()); }

void expect_close(const Tensor& got, const std::vector<double>& want, double tol) {
  ASSERT_EQ(got.numel(), static_cast<int64_t>(want.size()));
  for (size_t i = 0; i < want.size(); ++i) ASSERT_NEAR(got.data()[i], want[i], tol * (1 + std::abs(want[i]))) << i;
}

// One TCD run in double (DESIGN.md §10): x̂0 = (z − √(1−ᾱ_t) ε̂)/√ᾱ_t, x_s = √ᾱ_s x̂0 + √(1−ᾱ_s) ε̂ with
// s = ⌊(1−γ)t'⌋, then noise back up to t' except after the last step.
std::vector<double> tcd_reference(const NoiseSchedule& s, std::vector<double> z, const std::vector<int>& ts, double gamma,
                                  const ToyModel& m, std::vector<std::vector<double>> noises) {
  size_t drawn = 0;
  for (size_t i = 0; i < ts.size(); ++i) {
    const double at = s.alphas_cumprod[ts[i]];
    const int next = i + 1 < ts.size() ? ts[i + 1] : 0;
    const double as = s.alphas_cumprod[static_cast<int>(std::floor((1 - gamma) * next))];
    for (size_t k = 0; k < z.size(); ++k) {
      const double eps = m.a * z[k] + m.b, x0 = (z[k] - std::sqrt(1 - at) * eps) / std::sqrt(at);
      z[k] = std::sqrt(as) * x0 + std::sqrt(1 - as) * eps;
    }
    if (gamma > 0 && i + 1 < ts.size()) {
      const double r = s.alphas_cumprod[next] / as;
      for (size_t k = 0; k < z.size(); ++k) z[k] = std::sqrt(r) * z[k] + std::sqrt(1 - r) * noises[drawn][k];
      ++drawn;
    }
  }
  return z;
}

TEST(TcdSampler, MatchesAnIndependentComputationForEveryGamma) {
  const NoiseSchedule s = NoiseSchedule::scaled_linear();
  const Shape shape{2, 2, 3, 3};
  for (double gamma : {0.0, 0.3, 0.6, 1.0}) {
    SCOPED_TRACE(gamma);
    BatchNoise start(7, 0, 2);
    const Tensor z = start.draw(shape);
    // The sampler draws its per-step noise from `noise`; a twin with the same seed gives the reference's.
    BatchNoise noise(8, 0, 2), twin(8, 0, 2);
    std::vector<std::vector<double>> noises;
    for (int k = 0; k < 3; ++k) noises.push_back(to_double(twin.draw(shape)));
    ToyModel m;
    const Tensor out = tcd_sample(s, m.denoiser(), z, 4, gamma, noise);
    EXPECT_EQ(m.calls, (std::vector<int>{999, 759, 499, 259}));
    expect_close(out, tcd_reference(s, to_double(z), {999, 759, 499, 259}, gamma, m, noises), 1e-5);
  }
}

TEST(TcdSampler, GammaZeroIsDeterministicAndGammaAboveZeroIsNot) {
  const NoiseSchedule s = NoiseSchedule::scaled_linear();
  BatchNoise start(1, 0, 1);
  const Tensor z = start.draw({1, 2, 3, 3});
  auto run = [&](double gamma, uint64_t seed) {
    ToyModel m;
    BatchNoise noise(seed, 0, 1);
    return to_double(tcd_sample(s, m.denoiser(), z, 4, gamma, noise));
  };
  EXPECT_EQ(run(0.0, 1), run(0.0, 2));
  EXPECT_NE(run(0.3, 1), run(0.3, 2));
  ToyModel m;
  BatchNoise noise(1, 0, 1);
  EXPECT_THROW(tcd_sample(s, m.denoiser(), z, 4, 1.5, noise), ValueError);
}

TEST(PcmSampler, PhaseEdgesFollowThePcmRepository) {
  // floor(linspace(0, 50, M, endpoint=False)); the lower edge is ddim_timesteps_prev at the phase's start.
  EXPECT_EQ(pcm_phase_starts(4, 50), (std::vector<int>{0, 12, 25, 37}));
  EXPECT_EQ(pcm_phase_starts(1, 50), (std::vector<int>{0}));
  EXPECT_EQ(pcm_phase_starts(3, 50), (std::vector<int>{0, 16, 33}));
  EXPECT_EQ(pcm_lower_edge(0, 4, 50), 0);
  EXPECT_EQ(pcm_lower_edge(11, 4, 50), 0);
  EXPECT_EQ(pcm_lower_edge(12, 4, 50), 239);  // grid[11] = 12·20 − 1
  EXPECT_EQ(pcm_lower_edge(36, 4, 50), 499);
  EXPECT_EQ(pcm_lower_edge(49, 4, 50), 739);
  EXPECT_EQ(pcm_lower_edge(49, 1, 50), 0);
  EXPECT_THROW(pcm_phase_starts(51, 50), ValueError);
}

TEST(PcmSampler, JumpsAlongThePhaseEdges) {
  const NoiseSchedule s = NoiseSchedule::scaled_linear();
  BatchNoise start(3, 0, 2);
  const Tensor z = start.draw({2, 2, 3, 3});
  for (auto [phases, visits, edges] : std::vector<std::tuple<int, std::vector<int>, std::vector<int>>>{
           {4, {999, 739, 499, 239}, {739, 499, 239, 0}}, {2, {999, 499}, {499, 0}}, {1, {999}, {0}}}) {
    SCOPED_TRACE(phases);
    ToyModel m;
    const Tensor out = pcm_sample(s, m.denoiser(), z, phases);
    EXPECT_EQ(m.calls, visits);
    std::vector<double> ref = to_double(z);
    for (size_t i = 0; i < visits.size(); ++i) {
      const double at = s.alphas_cumprod[visits[i]], ae = s.alphas_cumprod[edges[i]];
      for (double& v : ref) {
        const double eps = m.a * v + m.b, x0 = (v - std::sqrt(1 - at) * eps) / std::sqrt(at);
        v = std::sqrt(ae) * x0 + std::sqrt(1 - ae) * eps;
      }
    }
    expect_close(out, ref, 1e-5);
  }
}

TEST(SamplerTable, EveryRowRunsAndUnknownNamesAreListed) {
  const NoiseSchedule s = NoiseSchedule::scaled_linear();
  for (const SamplerSpec& spec : sampler_table()) {
    SCOPED_TRACE(spec.name);
    EXPECT_EQ(&find_sampler(spec.name), &spec);
    EXPECT_GT(std::string(spec.doc).size(), 10u);
    ToyModel m;
    BatchNoise noise(1, 0, 1), start(2, 0, 1);
    const Tensor out = spec.run(s, m.denoiser(), start.draw({1, 2, 3, 3}), {2, 0.3, &noise});
    EXPECT_EQ(out.shape(), (Shape{1, 2, 3, 3}));
    EXPECT_EQ(m.calls.size(), 2u) << "two steps, one model call each";
  }
  try {
    find_sampler("euler");
    FAIL();
  } catch (const ValueError& e) {
    EXPECT_NE(std::string(e.what()).find("lcm, tcd, pcm, ddim or dpmpp-2m"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace lcd
