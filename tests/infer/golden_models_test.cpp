// The UNet and the autoencoder against outputs of the genuine diffusers library (golden/diffusers-A).
#include <gtest/gtest.h>

#include "autograd/tape.h"
#include "infer/io/model_io.h"
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

}  // namespace
}  // namespace lcd::testing
