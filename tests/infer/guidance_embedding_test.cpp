// Guidance-conditioned models (the LCM paper's w-condition, diffusers' time_cond_proj_dim): the guidance-scale
// embedding against its formula in double; a diffusers config with time_cond_proj_dim builds cond_proj with
// diffusers' name and shape; a zero cond_proj leaves the model's function unchanged and a non-zero one adds
// cond_proj(embedding) to the time embedding's input; adapters carrying the projection survive every file
// format, merge into a UNet that lacked it, and sum under combine.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>

#include "autograd/errors.h"
#include "autograd/ops.h"
#include "autograd/random.h"
#include "infer/io/lora_io.h"
#include "infer/lora_math.h"
#include "infer/samplers.h"
#include "tests/tiny_unet_config.h"
#include "tests/train/tiny_model.h"

namespace lcd {
namespace {

namespace fs = std::filesystem;

TEST(GuidanceEmbedding, MatchesTheFormulaInDouble) {
  const std::vector<double> w{0.0, 0.5, 2.0, 4.0};
  for (int64_t dim : {256, 7}) {
    const Tensor e = guidance_scale_embedding(w, dim);  // (4, dim)
    ASSERT_EQ(e.shape(), (Shape{4, dim}));
    const int64_t half = dim / 2;
    for (size_t b = 0; b < w.size(); ++b) {
      for (int64_t i = 0; i < half; ++i) {
        const double arg = 1000.0 * w[b] * std::exp(-std::log(10000.0) * i / (half - 1));
        // diffusers computes the argument in float32: its rounding, ≤ 2^-22·arg, bounds the difference.
        const double tol = 4.0 * arg * std::ldexp(1.0, -23) + 1e-6;
        EXPECT_NEAR(e.data()[b * dim + i], std::sin(arg), tol) << b << " " << i;
        EXPECT_NEAR(e.data()[b * dim + half + i], std::cos(arg), tol) << b << " " << i;
      }
      if (dim % 2) {
        EXPECT_EQ(e.data()[b * dim + dim - 1], 0.0f) << "odd width: zero-padded";
      }
    }
  }
}

struct TinyUNet {
  nlohmann::json cfg = testing::tiny_unet_config();
  std::unique_ptr<UNet2DConditionModel> unet;
  Rng rng{21};
  Tensor x, ctx;
  explicit TinyUNet(int64_t time_cond_proj_dim = 0) {
    if (time_cond_proj_dim) cfg["time_cond_proj_dim"] = time_cond_proj_dim;
    unet = std::make_unique<UNet2DConditionModel>(UNetConfig::from_json(cfg, "tiny"));
    testing::randomize_module(*unet, 22, 0.2f);
    x = rng.normal_tensor({2, 2, 4, 4});
    ctx = rng.normal_tensor({2, 3, 6});
  }
  Tensor forward(const Tensor& cond = Tensor()) {
    NoGradGuard g;
    return unet->forward(x, {500, 20}, ctx, cond);
  }
};

TEST(GuidanceConditionedUNet, BuildsCondProjAsDiffusersDoes) {
  TinyUNet f(32);
  bool found = false;
  for (auto& [name, t] : f.unet->named_parameters())
    if (name == "time_embedding.cond_proj.weight") {
      found = true;
      EXPECT_EQ(t->shape(), (Shape{8, 32})) << "nn.Linear(time_cond_proj_dim, block_out_channels[0], bias=False)";
    }
  EXPECT_TRUE(found);
  EXPECT_THROW(f.unet->forward(f.x, {500, 20}, f.ctx, Tensor::zeros({2, 31})), ShapeError);
  TinyUNet plain;
  EXPECT_THROW(plain.unet->forward(plain.x, {500, 20}, plain.ctx, Tensor::zeros({2, 32})), ShapeError)
      << "a condition for a UNet without cond_proj";
}

TEST(GuidanceConditionedUNet, ZeroCondProjKeepsTheFunctionAndItsInputAddsToTheTimeEmbedding) {
  TinyUNet f;
  const Tensor before = f.forward();
  f.unet->add_time_cond_proj(16);
  EXPECT_EQ(f.unet->config.raw["time_cond_proj_dim"], 16);
  const Tensor emb = guidance_scale_embedding({1.0, 3.0}, 16);
  const Tensor zero_proj = f.forward(emb);
  EXPECT_TRUE(std::equal(before.data(), before.data() + before.numel(), zero_proj.data()));
  // A non-zero cond_proj P: the same as feeding P·emb through a time embedding whose linear_1 bias absorbs it
  // per sample; checked on the time embedding directly.
  Tensor& p = f.unet->time_embedding.cond_proj->weight;  // (8, 16)
  for (int64_t i = 0; i < p.numel(); ++i) p.data()[i] = static_cast<float>(f.rng.normal() * 0.3);
  const Tensor features = timestep_features({500, 20}, 8, true, 0);  // (2, 8)
  NoGradGuard g;
  const Tensor via_module = f.unet->time_embedding.forward(features, emb);
  Tensor shifted = Tensor::empty(features.shape());
  for (int64_t b = 0; b < 2; ++b)
    for (int64_t o = 0; o < 8; ++o) {
      double acc = features.data()[b * 8 + o];
      for (int64_t k = 0; k < 16; ++k) acc += double(p.data()[o * 16 + k]) * emb.data()[b * 16 + k];
      shifted.data()[b * 8 + o] = static_cast<float>(acc);
    }
  const Tensor by_hand = f.unet->time_embedding.forward(shifted);
  for (int64_t i = 0; i < by_hand.numel(); ++i) EXPECT_NEAR(via_module.data()[i], by_hand.data()[i], 1e-5);
  const Tensor after = f.forward(emb);
  double moved = 0;
  for (int64_t i = 0; i < after.numel(); ++i) moved = std::max(moved, double(std::abs(after.data()[i] - before.data()[i])));
  EXPECT_GT(moved, 1e-3);
}

// An adapter with LoRA factors and cond_proj, in every format, then merged and combined.
class GuidanceAdapter : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("lcdkit_wcond_" + std::to_string(::getpid()));
    fs::create_directories(dir_);
    Rng rng(31);
    adapter_.modules["down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"] =
        LoraFactors{rng.normal_tensor({2, 8}), rng.normal_tensor({8, 2}), 4.0};
    adapter_.full_weights["time_embedding.cond_proj.weight"] = rng.normal_tensor({8, 16});
  }
  void TearDown() override { fs::remove_all(dir_); }
  fs::path dir_;
  LoraAdapter adapter_;
};

TEST_F(GuidanceAdapter, RoundTripsThroughEveryFormat) {
  for (auto [format, name, key] : std::vector<std::tuple<LoraFormat, std::string, std::string>>{
           {LoraFormat::kDiffusers, "peft.safetensors", "unet.time_embedding.cond_proj.weight"},
           {LoraFormat::kKohya, "kohya.safetensors", "lora_unet_time_embedding_cond_proj.diff"},
           {LoraFormat::kHdf5, "a.h5", ""}}) {
    SCOPED_TRACE(name);
    const std::string path = (dir_ / name).string();
    write_lora(path, adapter_, format);
    if (!key.empty()) {
      EXPECT_TRUE(SafetensorsFile::read(path).contains(key)) << key;
    }
    const LoraAdapter back = read_lora(path);
    ASSERT_EQ(back.full_weights.size(), 1u);
    const Tensor& a = adapter_.full_weights.at("time_embedding.cond_proj.weight");
    const Tensor& b = back.full_weights.at("time_embedding.cond_proj.weight");
    ASSERT_EQ(a.shape(), b.shape());
    EXPECT_TRUE(std::equal(a.data(), a.data() + a.numel(), b.data()));
    EXPECT_EQ(back.modules.size(), 1u);
  }
  LoraAdapter bad = adapter_;
  bad.full_weights["time_embedding.cond_proj.weight"].data()[3] = NAN;
  write_lora((dir_ / "nan.safetensors").string(), bad, LoraFormat::kDiffusers);
  EXPECT_THROW(read_lora((dir_ / "nan.safetensors").string()), FormatError);
}

TEST_F(GuidanceAdapter, MergesIntoAUNetWithoutCondProjAndSumsUnderCombine) {
  TinyUNet f;
  EXPECT_THROW(merge_lora(*f.unet, adapter_, 0.5), FormatError) << "no cond_proj yet";
  prepare_unet_for(*f.unet, adapter_);
  EXPECT_EQ(f.unet->config.time_cond_proj_dim, 16);
  merge_lora(*f.unet, adapter_, 0.5);
  const Tensor& t = adapter_.full_weights.at("time_embedding.cond_proj.weight");
  const Tensor& merged = f.unet->time_embedding.cond_proj->weight;
  for (int64_t i = 0; i < t.numel(); ++i) EXPECT_FLOAT_EQ(merged.data()[i], 0.5f * t.data()[i]);

  const LoraAdapter sum = combine_cat({{&adapter_, 0.25, "a"}, {&adapter_, 0.5, "b"}});
  const Tensor& s = sum.full_weights.at("time_embedding.cond_proj.weight");
  for (int64_t i = 0; i < t.numel(); ++i) EXPECT_NEAR(s.data()[i], 0.75 * t.data()[i], 1e-6);
  EXPECT_THROW(attach_lora(*f.unet, adapter_, 1.0), FormatError) << "whole tensors only merge";
}

// lcm-sample's path: a guidance-conditioned UNet gets w = s − 1 in one conditional pass, and the scale matters.
TEST_F(GuidanceAdapter, SamplingFeedsTheEmbeddingOfTheScale) {
  TinyUNet f(16);
  Tensor& p = f.unet->time_embedding.cond_proj->weight;
  for (int64_t i = 0; i < p.numel(); ++i) p.data()[i] = static_cast<float>(f.rng.normal() * 0.3);
  auto out = [&](double s) { return guided_output(*f.unet, f.x, 500, Conditioning{f.ctx, Tensor(), s}); };
  const Tensor a = out(2.0), b = out(4.0);
  Tensor want;
  {
    NoGradGuard g;
    want = f.unet->forward(f.x, {500, 500}, f.ctx, guidance_scale_embedding({1.0, 1.0}, 16));
  }
  EXPECT_TRUE(std::equal(a.data(), a.data() + a.numel(), want.data())) << "w = s − 1, no uncond pass needed";
  EXPECT_FALSE(std::equal(a.data(), a.data() + a.numel(), b.data()));
}

}  // namespace
}  // namespace lcd
