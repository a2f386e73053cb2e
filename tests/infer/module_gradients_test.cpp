// Gradient flow through whole modules. Every op is finite-difference checked in double on its own
// (tests/autograd); here a tiny UNet and a tiny autoencoder check the wiring: every parameter receives a
// gradient, and the directional derivative along a random direction matches central differences (float32,
// losses accumulated in double, step 1e-3, so a 2% tolerance is far below the error of a missing branch).
#include <gtest/gtest.h>

#include <random>

#include "infer/nn/autoencoder.h"
#include "infer/nn/unet.h"
#include "tests/tiny_unet_config.h"

namespace lcd {
namespace {

void randomize(Module& m, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> n(0.0f, 0.2f);
  for (auto& [name, t] : m.named_parameters()) {
    const bool is_norm_weight = name.find("norm") != std::string::npos && name.find(".weight") != std::string::npos;
    for (int64_t i = 0; i < t->numel(); ++i) t->data()[i] = (is_norm_weight ? 1.0f : 0.0f) + n(rng);
  }
}

Tensor random_input(const Shape& s, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> n(0.0f, 1.0f);
  Tensor t = Tensor::empty(s);
  for (int64_t i = 0; i < t.numel(); ++i) t.data()[i] = n(rng);
  return t;
}

double contract(const Tensor& y, const Tensor& r) {
  double acc = 0;
  for (int64_t i = 0; i < y.numel(); ++i) acc += double(y.data()[i]) * r.data()[i];
  return acc;
}

// loss(θ) = Σ f(θ) ⊙ R; checks ∇loss·v against (loss(θ + hv) − loss(θ − hv)) / 2h.
void check_module_gradients(Module& m, const std::function<Tensor()>& f, uint64_t seed) {
  auto params = m.named_parameters();
  for (auto& [name, t] : params) t->set_requires_grad(true);
  Tensor y = f();
  Tensor r = random_input(y.shape(), seed);
  sum(mul(y, r)).backward();
  std::mt19937_64 rng(seed + 1);
  std::normal_distribution<float> n(0.0f, 1.0f);
  std::vector<std::vector<float>> v;
  double analytic = 0;
  for (auto& [name, t] : params) {
    ASSERT_TRUE(t->has_grad()) << name << " received no gradient";
    double norm = 0;
    for (int64_t i = 0; i < t->numel(); ++i) norm += std::abs(t->grad().data()[i]);
    EXPECT_GT(norm, 0.0) << name << " has an all-zero gradient";
    v.emplace_back(t->numel());
    for (int64_t i = 0; i < t->numel(); ++i) {
      v.back()[i] = n(rng);
      analytic += double(t->grad().data()[i]) * v.back()[i];
    }
  }
  const float h = 1e-3f;
  auto shifted = [&](float sign) {
    for (size_t p = 0; p < params.size(); ++p)
      for (int64_t i = 0; i < params[p].second->numel(); ++i) params[p].second->data()[i] += sign * h * v[p][i];
    NoGradGuard g;
    return contract(f(), r);
  };
  const double plus = shifted(1.0f);
  const double minus = shifted(-2.0f);
  shifted(1.0f);
  const double numeric = (plus - minus) / (2 * h);
  EXPECT_NEAR(analytic, numeric, 0.02 * std::abs(numeric)) << "directional derivative";
}

TEST(ModuleGradients, TinyUNetPassesGradientsToEveryParameter) {
  const nlohmann::json cfg = testing::tiny_unet_config();
  UNet2DConditionModel unet(UNetConfig::from_json(cfg, "tiny"));
  randomize(unet, 1);
  Tensor x = random_input({2, 2, 4, 4}, 2), ctx = random_input({2, 3, 6}, 3);
  check_module_gradients(unet, [&] { return unet.forward(x, {999, 37}, ctx); }, 4);
}

// A guidance-conditioned UNet (time_cond_proj_dim) with its guidance embedding: cond_proj gets its gradient too.
TEST(ModuleGradients, GuidanceConditionedUNetPassesGradientsToCondProj) {
  nlohmann::json cfg = testing::tiny_unet_config();
  cfg["time_cond_proj_dim"] = 16;
  UNet2DConditionModel unet(UNetConfig::from_json(cfg, "tiny"));
  randomize(unet, 11);
  Tensor x = random_input({2, 2, 4, 4}, 12), ctx = random_input({2, 3, 6}, 13);
  const Tensor w = guidance_scale_embedding({0.5, 3.0}, 16);
  check_module_gradients(unet, [&] { return unet.forward(x, {999, 37}, ctx, w); }, 14);
}

TEST(ModuleGradients, TinyAutoencoderPassesGradientsToEveryParameter) {
  nlohmann::json cfg = {{"block_out_channels", {8, 8}}, {"layers_per_block", 1}, {"norm_num_groups", 4},
                        {"latent_channels", 2},         {"in_channels", 1},      {"out_channels", 1}};
  AutoencoderKL vae(AutoencoderConfig::from_json(cfg, "tiny"));
  randomize(vae, 5);
  Tensor x = random_input({2, 1, 8, 8}, 6);
  check_module_gradients(vae, [&] {
    DiagonalGaussian p = vae.encode(x);
    return concat(std::vector<Tensor>{reshape(vae.decode(p.mean), std::vector<int64_t>{2, -1}),
                                      reshape(p.logvar, std::vector<int64_t>{2, -1})}, 1);
  }, 7);
}

}  // namespace
}  // namespace lcd
