// The UNet and the autoencoder against outputs of the genuine diffusers library (golden/diffusers-A).
#include <gtest/gtest.h>

#include <utility>

#include "autograd/cpu/precision.h"
#include "autograd/tape.h"
#include "infer/io/model_io.h"
#include "infer/nn/layers.h"
#include "tests/infer/golden.h"

namespace lcd::testing {
namespace {

class GoldenModels : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!golden_available()) GTEST_SKIP() << "shared/golden not found";
    tensors_ = std::make_unique<SafetensorsFile>(SafetensorsFile::read(golden_dir("diffusers-A/tensors.safetensors")));
  }
  Tensor golden(const std::string& name) const { return tensors_->tensor(name); }
  std::unique_ptr<SafetensorsFile> tensors_;
};

TEST_F(GoldenModels, UNetMatchesDiffusersAtBothTimestepPairs) {
  auto unet = load_unet(golden_dir("diffusers-A/unet"));
  EXPECT_EQ(unet->parameter_count(), 4399684);
  NoGradGuard no_grad;
  Tensor sample = golden("unet.in.sample"), context = golden("unet.in.encoder_hidden_states");
  Tensor t = golden("unet.in.timesteps");
  expect_whole_tensor_close(unet->forward(sample, {t.data()[0], t.data()[1]}, context), golden("unet.out"), 1e-4,
                            "unet.out (999, 37)");
  expect_whole_tensor_close(unet->forward(sample, {500, 500}, context), golden("unet.out_t500"), 1e-4,
                            "unet.out_t500");
}

TEST_F(GoldenModels, AutoencoderEncodeAndDecodeMatchDiffusers) {
  auto vae = load_autoencoder(golden_dir("diffusers-A/vae"));
  NoGradGuard no_grad;
  DiagonalGaussian posterior = vae->encode(golden("vae.in.image"));
  expect_whole_tensor_close(posterior.mean, golden("vae.out.mean"), 1e-4, "vae.out.mean");
  expect_whole_tensor_close(posterior.logvar, golden("vae.out.logvar"), 1e-4, "vae.out.logvar");
  expect_whole_tensor_close(vae->decode(posterior.mean), golden("vae.out.decoded"), 1e-4, "vae.out.decoded");
}

// bf16 GEMM operands (where the CPU has them) against the same goldens. Each convolution and linear rounds
// its operands to 8 significant bits (relative error ≤ 2^-9 each, accumulated in fp32); through the UNet's
// ~30 GEMM layers and norms that grows to about 1e-2 of the output's range (measured on a Xeon with AMX:
// 0.80% and 0.90% for the two timestep pairs, 0.71% for the encoder's mean), and the decoder, whose single
// output channel sums 32 rounded ones, to 1.7%. The bounds are about twice those; fp32 (above) stays the
// reference at 1e-4.
TEST_F(GoldenModels, Bf16ForwardsStayWithinTheRoundingOfTheirOperands) {
  if (!bf16_supported()) GTEST_SKIP() << "this CPU has no native bf16";
  PrecisionGuard bf16(Precision::kBf16);
  auto unet = load_unet(golden_dir("diffusers-A/unet"));
  auto vae = load_autoencoder(golden_dir("diffusers-A/vae"));
  NoGradGuard no_grad;
  Tensor sample = golden("unet.in.sample"), context = golden("unet.in.encoder_hidden_states");
  Tensor t = golden("unet.in.timesteps");
  expect_whole_tensor_close(unet->forward(sample, {t.data()[0], t.data()[1]}, context), golden("unet.out"), 2e-2,
                            "bf16 unet.out (999, 37)");
  expect_whole_tensor_close(unet->forward(sample, {500, 500}, context), golden("unet.out_t500"), 2e-2, "bf16 unet.out_t500");
  DiagonalGaussian posterior = vae->encode(golden("vae.in.image"));
  expect_whole_tensor_close(posterior.mean, golden("vae.out.mean"), 2e-2, "bf16 vae.out.mean");
  expect_whole_tensor_close(vae->decode(golden("vae.out.mean")), golden("vae.out.decoded"), 4e-2, "bf16 vae.out.decoded");
}

// lcm-sample keeps only the forward forms of the UNet's and decoder's weights (keep_forward_forms_only): the
// outputs are bit for bit those of the float weights (the kernels read the same operands, made once instead of
// per call), hence still diffusers' at each precision's tolerance, and the float values are gone.
TEST_F(GoldenModels, InferenceOnlyWeightsGiveTheSameOutputs) {
  std::vector<Precision> precisions{Precision::kFp32};
  if (bf16_supported()) precisions.push_back(Precision::kBf16);
  for (Precision p : precisions) {
    PrecisionGuard guard(p);
    const double tol = p == Precision::kBf16 ? 2e-2 : 1e-4;
    auto unet = load_unet(golden_dir("diffusers-A/unet"));
    auto vae = load_autoencoder(golden_dir("diffusers-A/vae"));
    NoGradGuard no_grad;
    Tensor sample = golden("unet.in.sample"), context = golden("unet.in.encoder_hidden_states");
    Tensor t = golden("unet.in.timesteps");
    const Tensor before = unet->forward(sample, {t.data()[0], t.data()[1]}, context);
    const Tensor decoded_before = vae->decode(golden("vae.out.mean"));
    const int64_t unet_floats = keep_forward_forms_only(*unet), vae_floats = keep_forward_forms_only(*vae);
    EXPECT_GT(unet_floats, 4 * 4000000) << "most of the UNet's 4.4 M parameters are linear and conv weights";
    EXPECT_GT(vae_floats, 0);
    EXPECT_EQ(std::as_const(unet->conv_in.weight).data(), nullptr);
    const Tensor after = unet->forward(sample, {t.data()[0], t.data()[1]}, context);
    const Tensor decoded_after = vae->decode(golden("vae.out.mean"));
    ASSERT_EQ(after.shape(), before.shape());
    EXPECT_EQ(std::vector<float>(after.data(), after.data() + after.numel()),
              std::vector<float>(before.data(), before.data() + before.numel())) << precision_name(p);
    EXPECT_EQ(std::vector<float>(decoded_after.data(), decoded_after.data() + decoded_after.numel()),
              std::vector<float>(decoded_before.data(), decoded_before.data() + decoded_before.numel()))
        << precision_name(p);
    expect_whole_tensor_close(after, golden("unet.out"), tol, std::string(precision_name(p)) + " unet.out, inference-only weights");
    expect_whole_tensor_close(decoded_after, golden("vae.out.decoded"), 2 * tol,
                              std::string(precision_name(p)) + " vae.out.decoded, inference-only weights");
  }
}

}  // namespace
}  // namespace lcd::testing
