// Where a LoRA file's alpha comes from: PEFT metadata, adapter_config.json beside the file, none (alpha = r),
// and kohya .alpha tensors stored as F16, BF16, F32 or I64 (0 or missing = rank).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "autograd/errors.h"
#include "infer/io/lora_io.h"

namespace lcd {
namespace {

namespace fs = std::filesystem;

class LoraAlpha : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("lcdkit_alpha_" + std::to_string(::getpid()));
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string path(const std::string& n) { return (dir_ / n).string(); }
  fs::path dir_;
};

TEST_F(LoraAlpha, PeftWithoutAnyAlphaMeansAlphaEqualsRank) {
  write_safetensors(path("a.safetensors"), {{"unet.mid_block.resnets.0.time_emb_proj.lora_A.weight", Tensor::zeros({3, 256})},
                                             {"unet.mid_block.resnets.0.time_emb_proj.lora_B.weight", Tensor::zeros({128, 3})}});
  EXPECT_EQ(read_lora(path("a.safetensors")).modules.begin()->second.alpha, 3.0);
}

TEST_F(LoraAlpha, PeftAlphaFromAdapterConfigBesideTheFile) {
  write_safetensors(path("adapter_model.safetensors"),
                    {{"base_model.model.mid_block.resnets.0.time_emb_proj.lora_A.weight", Tensor::zeros({3, 256})},
                     {"base_model.model.mid_block.resnets.0.time_emb_proj.lora_B.weight", Tensor::zeros({128, 3})}});
  std::ofstream(path("adapter_config.json")) << R"({"r": 3, "lora_alpha": 12, "peft_type": "LORA"})";
  const LoraAdapter a = read_lora(path("adapter_model.safetensors"));
  ASSERT_EQ(a.modules.count("mid_block.resnets.0.time_emb_proj"), 1u);
  EXPECT_EQ(a.modules.begin()->second.alpha, 12.0);
}

TEST_F(LoraAlpha, KohyaAlphaInEveryDtypeAndZeroMeansRank) {
  const std::string m = "lora_unet_mid_block_resnets_0_time_emb_proj";
  for (auto [dtype, value, expected] : {std::tuple{DType::kF16, 0.5f, 0.5}, {DType::kBF16, 6.0f, 6.0},
                                        {DType::kF32, 7.25f, 7.25}, {DType::kI64, 4.0f, 4.0}, {DType::kF32, 0.0f, 2.0}}) {
    write_safetensors(path("k.safetensors"), {{m + ".lora_down.weight", Tensor::zeros({2, 256})},
                                               {m + ".lora_up.weight", Tensor::zeros({128, 2})},
                                               {m + ".alpha", Tensor::full({}, value), dtype}});
    EXPECT_EQ(read_lora(path("k.safetensors")).modules.begin()->second.alpha, expected) << dtype_name(dtype);
  }
}

TEST_F(LoraAlpha, ForeignKeysAreErrorsUnlessAllowed) {
  write_safetensors(path("t.safetensors"), {{"optimizer.state.0.exp_avg", Tensor::zeros({2, 8})},
                                             {"unet.conv_in.lora_A.weight", Tensor::zeros({2, 4, 3, 3})},
                                             {"unet.conv_in.lora_B.weight", Tensor::zeros({64, 2, 1, 1})}});
  EXPECT_THROW(read_lora(path("t.safetensors")), FormatError);
  std::vector<std::string> skipped;
  EXPECT_EQ(read_lora(path("t.safetensors"), true, &skipped).modules.size(), 1u);
  EXPECT_EQ(skipped.size(), 1u);
}

}  // namespace
}  // namespace lcd
