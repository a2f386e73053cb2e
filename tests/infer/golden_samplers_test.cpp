// Schedules, timestep grids and sampler trajectories against diffusers (golden/diffusers-A).
#include <gtest/gtest.h>

#include <fstream>

#include "infer/io/model_io.h"
#include "infer/samplers.h"
#include "tests/infer/golden.h"

namespace lcd::testing {
namespace {

class GoldenSamplers : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!golden_available()) GTEST_SKIP() << "shared/golden not found";
    tensors_ = std::make_unique<SafetensorsFile>(SafetensorsFile::read(golden_dir("diffusers-A/tensors.safetensors")));
    manifest_ = golden_manifest("diffusers-A");
  }
  Tensor golden(const std::string& name) const { return tensors_->tensor(name); }
  std::unique_ptr<SafetensorsFile> tensors_;
  nlohmann::json manifest_;
};

TEST_F(GoldenSamplers, AlphasCumprodAndBoundaryScalings) {
  NoiseSchedule s = NoiseSchedule::from_config(manifest_["scheduler_config"], "manifest");
  Tensor acp = Tensor::empty({1000});
  for (int t = 0; t < 1000; ++t) acp.data()[t] = static_cast<float>(s.alphas_cumprod[t]);
  expect_whole_tensor_close(acp, golden("sched.alphas_cumprod"), 1e-6, "alphas_cumprod");
  Tensor ts = golden("lcm.scalings.timesteps");
  Tensor skip = Tensor::empty(ts.shape()), out = Tensor::empty(ts.shape());
  for (int64_t i = 0; i < ts.numel(); ++i) {
    BoundaryScalings b = boundary_scalings(static_cast<int>(ts.data()[i]));
    skip.data()[i] = static_cast<float>(b.c_skip);
    out.data()[i] = static_cast<float>(b.c_out);
  }
  expect_whole_tensor_close(skip, golden("lcm.c_skip"), 1e-6, "c_skip");
  expect_whole_tensor_close(out, golden("lcm.c_out"), 1e-6, "c_out");
}

TEST_F(GoldenSamplers, TimestepsMatchExactly) {
  EXPECT_EQ(ddim_timesteps(50), manifest_["ddim_timesteps_50"].get<std::vector<int>>());
  EXPECT_EQ(ddim_timesteps(10), manifest_["ddim10_timesteps"].get<std::vector<int>>());
  EXPECT_EQ(dpmpp_timesteps(8), manifest_["dpmpp2m8_timesteps"].get<std::vector<int>>());
  for (const char* n : {"1", "2", "4", "8"})
    EXPECT_EQ(lcm_timesteps(std::stoi(n)), manifest_["lcm_timesteps"][n].get<std::vector<int>>()) << n << " steps";
  std::vector<int> grid = lcd_grid(50);
  EXPECT_EQ(grid.front(), 19);
  EXPECT_EQ(grid.back(), 999);
}

TEST_F(GoldenSamplers, GuidedDdim10AndDpmSolver8Trajectories) {
  auto unet = load_unet(golden_dir("diffusers-A/unet"));
  NoiseSchedule s = NoiseSchedule::from_config(manifest_["scheduler_config"], "manifest");
  Conditioning c{golden("unet.in.encoder_hidden_states"), golden("unet.in.uncond"), manifest_["guidance_scale"]};
  Denoiser model = unet_denoiser(*unet, c);
  expect_whole_tensor_close(ddim_sample(s, model, golden("sample.in.noise"), 10), golden("sample.ddim10.out"), 1e-4,
                            "DDIM 10 steps, s = 3");
  expect_whole_tensor_close(dpmpp_2m_sample(s, model, golden("sample.in.noise"), 8), golden("sample.dpmpp2m8.out"),
                            1e-4, "DPM-Solver++(2M) 8 steps, s = 3");
}

}  // namespace
}  // namespace lcd::testing
