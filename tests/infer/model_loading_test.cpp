// Strict model loading: unsupported config fields, missing/unexpected/mismatched keys, and save → load.
#include <gtest/gtest.h>

#include <filesystem>

#include "autograd/errors.h"
#include "infer/io/model_io.h"
#include "infer/nn/config_check.h"
#include "tests/infer/golden.h"
#include "tests/tiny_unet_config.h"

namespace lcd::testing {
namespace {

namespace fs = std::filesystem;

TEST(ModelLoading, UnsupportedConfigFieldsAreNamedWithTheirValue) {
  auto cfg = tiny_unet_config();
  cfg["class_embed_type"] = "timestep";
  try {
    UNetConfig::from_json(cfg, "unet/config.json");
    FAIL();
  } catch (const ConfigError& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("class_embed_type"), std::string::npos) << m;
    EXPECT_NE(m.find("timestep"), std::string::npos) << m;
    EXPECT_NE(m.find("unet/config.json"), std::string::npos) << m;
  }
  cfg = tiny_unet_config();
  cfg["attention_type"] = "gated";
  EXPECT_THROW(UNetConfig::from_json(cfg, "c"), ConfigError);
  cfg = tiny_unet_config();
  cfg["down_block_types"] = {"CrossAttnDownBlock2D", "AttnDownBlock2D"};
  EXPECT_THROW(UNetConfig::from_json(cfg, "c"), ConfigError);
  cfg = tiny_unet_config();
  cfg["made_up_field"] = 1;
  EXPECT_THROW(UNetConfig::from_json(cfg, "c"), ConfigError);
}

TEST(ModelLoading, PerBlockHeadsAndLinearProjectionBuild) {
  auto cfg = tiny_unet_config();
  cfg["attention_head_dim"] = {2, 4};
  cfg["use_linear_projection"] = true;
  UNet2DConditionModel unet(UNetConfig::from_json(cfg, "c"));
  bool found_linear = false;
  for (auto& [name, t] : unet.named_parameters())
    if (name == "down_blocks.0.attentions.0.proj_in.weight") found_linear = t->ndim() == 2;
  EXPECT_TRUE(found_linear);
  Tensor y = unet.forward(Tensor::zeros({1, 2, 4, 4}), {10}, Tensor::zeros({1, 3, 6}));
  EXPECT_EQ(y.shape(), Shape({1, 2, 4, 4}));
}

TEST(ModelLoading, StrictLoadingListsEveryProblemByName) {
  const fs::path dir = fs::temp_directory_path() / ("lcdkit_model_" + std::to_string(::getpid()));
  auto cfg = tiny_unet_config();
  UNet2DConditionModel unet(UNetConfig::from_json(cfg, "c"));
  save_module(unet, cfg, dir.string());
  auto loaded = load_unet(dir.string());  // the round trip loads strictly
  EXPECT_EQ(loaded->parameter_count(), unet.parameter_count());

  // Now damage the file: drop one key, add one, reshape one.
  SafetensorsFile f = SafetensorsFile::read((dir / "diffusion_pytorch_model.safetensors").string());
  std::vector<SafetensorsTensor> tensors;
  for (const auto& n : f.names()) {
    if (n == "conv_in.bias") continue;
    Tensor t = f.tensor(n);
    if (n == "conv_out.bias") t = Tensor::zeros({3});
    tensors.push_back({n, t, DType::kF16});
  }
  tensors.push_back({"extra.weight", Tensor::zeros({1}), DType::kF16});
  write_safetensors((dir / "diffusion_pytorch_model.safetensors").string(), tensors);
  try {
    load_unet(dir.string());
    FAIL();
  } catch (const FormatError& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("missing (1): conv_in.bias"), std::string::npos) << m;
    EXPECT_NE(m.find("unexpected (1): extra.weight"), std::string::npos) << m;
    EXPECT_NE(m.find("conv_out.bias (3) vs model (2)"), std::string::npos) << m;
  }
  fs::remove_all(dir);
  EXPECT_THROW(load_unet(dir.string()), IoError);
}

TEST(ModelLoading, Fp16WeightsLoadWithinHalfPrecision) {
  if (!golden_available()) GTEST_SKIP();
  const fs::path dir = fs::temp_directory_path() / ("lcdkit_fp16_" + std::to_string(::getpid()));
  auto unet = load_unet(golden_dir("diffusers-A/unet"));
  save_module(*unet, unet->config.raw, dir.string(), DType::kF16);
  auto half = load_unet(dir.string());
  auto a = unet->named_parameters(), b = half->named_parameters();
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i)
    for (int64_t k = 0; k < a[i].second->numel(); ++k)
      ASSERT_NEAR(b[i].second->data()[k], a[i].second->data()[k], 1e-3 * std::abs(a[i].second->data()[k]) + 1e-7)
          << a[i].first;
  fs::remove_all(dir);
}

}  // namespace
}  // namespace lcd::testing
