// LoRA against diffusers + PEFT (golden/diffusers-A): the UNet with the adapter from the PEFT file and from the
// kohya file, merged and unmerged, and one LCM step with the adapter.
#include <gtest/gtest.h>

#include <filesystem>
#include <utility>

#include "autograd/cpu/precision.h"
#include "autograd/errors.h"
#include "autograd/tape.h"
#include "infer/io/lora_io.h"
#include "infer/io/model_io.h"
#include "infer/samplers.h"
#include "tests/infer/golden.h"

namespace lcd::testing {
namespace {

class GoldenLora : public ::testing::TestWithParam<std::tuple<std::string, bool>> {
 protected:
  void SetUp() override {
    if (!golden_available()) GTEST_SKIP() << "shared/golden not found";
    tensors_ = std::make_unique<SafetensorsFile>(SafetensorsFile::read(golden_dir("diffusers-A/tensors.safetensors")));
    unet_ = load_unet(golden_dir("diffusers-A/unet"));
    const auto [file, merged] = GetParam();
    LoraAdapter adapter = read_lora(golden_dir("diffusers-A/" + file));
    ASSERT_EQ(adapter.modules.size(), 117u);
    EXPECT_EQ(adapter.modules.begin()->second.alpha, 8.0);
    if (merged)
      merge_lora(*unet_, adapter, 1.0);
    else
      attach_lora(*unet_, adapter, 1.0);
  }
  Tensor golden(const std::string& name) const { return tensors_->tensor(name); }
  std::unique_ptr<SafetensorsFile> tensors_;
  std::unique_ptr<UNet2DConditionModel> unet_;
};

TEST_P(GoldenLora, UNetOutputMatches) {
  NoGradGuard no_grad;
  Tensor t = golden("unet.in.timesteps");
  expect_whole_tensor_close(unet_->forward(golden("unet.in.sample"), {t.data()[0], t.data()[1]},
                                           golden("unet.in.encoder_hidden_states")),
                            golden("lora.unet.out"), 1e-4, "lora.unet.out");
}

TEST_P(GoldenLora, OneLcmStepMatches) {
  NoiseSchedule s = NoiseSchedule::scaled_linear();
  BatchNoise noise(0, 0, 2);  // one step draws no noise
  Tensor denoised = lcm_sample(s, unet_denoiser(*unet_, {golden("unet.in.encoder_hidden_states"), Tensor(), 1.0}),
                               golden("sample.in.noise"), 1, noise);
  expect_whole_tensor_close(denoised, golden("lora.lcm1.out"), 1e-4, "lora.lcm1.out");
}

INSTANTIATE_TEST_SUITE_P(FilesAndModes, GoldenLora,
                         ::testing::Combine(::testing::Values("lora_peft.safetensors", "lora_kohya.safetensors"),
                                            ::testing::Bool()));

// lcm-sample's loader (load_unet_for_inference: built shape-only, each weight read, the adapters folded in and
// kept in its forward form at once) gives bit for bit the UNet of load_unet + merge_lora, in each precision,
// with two adapters at weights other than 1; and diffusers' LoRA output in fp32 at weight 1.
TEST(GoldenLoraInference, LoaderFoldingAsItReadsEqualsLoadThenMerge) {
  if (!golden_available()) GTEST_SKIP() << "shared/golden not found";
  const SafetensorsFile tensors = SafetensorsFile::read(golden_dir("diffusers-A/tensors.safetensors"));
  const std::string peft = golden_dir("diffusers-A/lora_peft.safetensors"), kohya = golden_dir("diffusers-A/lora_kohya.safetensors");
  const LoraAdapter a = read_lora(peft), b = read_lora(kohya);
  const Tensor t = tensors.tensor("unet.in.timesteps"), sample = tensors.tensor("unet.in.sample");
  const Tensor context = tensors.tensor("unet.in.encoder_hidden_states");
  std::vector<Precision> precisions{Precision::kFp32};
  if (bf16_supported()) precisions.push_back(Precision::kBf16);
  for (Precision p : precisions) {
    PrecisionGuard guard(p);
    NoGradGuard no_grad;
    auto reference = load_unet(golden_dir("diffusers-A/unet"));
    merge_lora(*reference, a, 0.75);
    merge_lora(*reference, b, -0.5);
    const Tensor want = reference->forward(sample, {t.data()[0], t.data()[1]}, context);
    auto unet = load_unet_for_inference(golden_dir("diffusers-A/unet"), {{&a, 0.75, peft}, {&b, -0.5, kohya}});
    EXPECT_EQ(std::as_const(unet->conv_in.weight).data(), nullptr) << "kept in its forward form only";
    const Tensor got = unet->forward(sample, {t.data()[0], t.data()[1]}, context);
    ASSERT_EQ(got.shape(), want.shape());
    EXPECT_EQ(std::vector<float>(got.data(), got.data() + got.numel()),
              std::vector<float>(want.data(), want.data() + want.numel())) << precision_name(p);
  }
  NoGradGuard no_grad;
  auto unet = load_unet_for_inference(golden_dir("diffusers-A/unet"), {{&a, 1.0, peft}});
  expect_whole_tensor_close(unet->forward(sample, {t.data()[0], t.data()[1]}, context), tensors.tensor("lora.unet.out"),
                            1e-4, "lora.unet.out, folded while loading");
  // An adapter that does not fit fails naming its file.
  LoraAdapter bad = a;
  bad.modules["no_such_block.proj"] = a.modules.begin()->second;
  try {
    load_unet_for_inference(golden_dir("diffusers-A/unet"), {{&bad, 1.0, "bad.safetensors"}});
    ADD_FAILURE() << "an adapter module matching nothing was accepted";
  } catch (const FormatError& e) {
    EXPECT_NE(std::string(e.what()).find("bad.safetensors: adapter module \"no_such_block.proj\""), std::string::npos) << e.what();
  }
}

TEST(LoraIo, KohyaNamesRoundTripForEveryUNetModule) {
  if (!golden_available()) GTEST_SKIP();
  auto unet = load_unet(golden_dir("diffusers-A/unet"));
  for (auto& [name, m] : unet->named_modules()) {
    if (!name.empty()) {
      EXPECT_EQ(kohya_to_module_name(module_to_kohya_name(name)), name);
    }
  }
}

TEST(LoraIo, WritesAndReadsBothStylesWithAlphaAndMixedRanks) {
  LoraAdapter a;
  a.modules["down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_out.0"] =
      LoraFactors{Tensor::full({2, 64}, 0.5f), Tensor::full({64, 2}, 0.25f), 3.0};
  a.modules["mid_block.resnets.0.conv1"] =
      LoraFactors{Tensor::full({4, 128, 3, 3}, 0.125f), Tensor::full({128, 4, 1, 1}, -0.375f), 4.0};
  const auto dir = std::filesystem::temp_directory_path();
  for (LoraFormat f : {LoraFormat::kDiffusers, LoraFormat::kKohya}) {
    const std::string path = (dir / ("lcdkit_lora_" + std::to_string(::getpid()) + ".safetensors")).string();
    write_lora(path, a, f, DType::kF16);
    LoraAdapter b = read_lora(path);
    ASSERT_EQ(b.modules.size(), 2u);
    for (const auto& [name, fa] : a.modules) {
      const LoraFactors& fb = b.modules.at(name);
      EXPECT_EQ(fb.alpha, fa.alpha) << name;
      EXPECT_EQ(fb.down.shape(), fa.down.shape());
      EXPECT_EQ(fb.up.data()[0], fa.up.data()[0]);
    }
    std::filesystem::remove(path);
  }
}

TEST(LoraIo, AttachingAModuleTheModelLacksIsAnErrorNamingIt) {
  if (!golden_available()) GTEST_SKIP();
  auto unet = load_unet(golden_dir("diffusers-A/unet"));
  LoraAdapter a;
  a.modules["down_blocks.7.resnets.0.conv1"] = LoraFactors{Tensor::zeros({2, 64, 3, 3}), Tensor::zeros({64, 2, 1, 1}), 2};
  try {
    attach_lora(*unet, a, 1.0);
    FAIL();
  } catch (const FormatError& e) {
    EXPECT_NE(std::string(e.what()).find("down_blocks.7.resnets.0.conv1"), std::string::npos) << e.what();
  }
  a.modules.clear();
  a.modules["down_blocks.0.resnets.0.conv1"] = LoraFactors{Tensor::zeros({2, 32, 3, 3}), Tensor::zeros({64, 2, 1, 1}), 2};
  EXPECT_THROW(attach_lora(*unet, a, 1.0), FormatError);
}

}  // namespace
}  // namespace lcd::testing
