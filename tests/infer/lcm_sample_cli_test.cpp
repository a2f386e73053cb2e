// End to end: the lcm-sample binary on the golden model with --noise/--cond, its --latents-out against the
// diffusers DDIM-10 trajectory (s = 3), and one clear error line with a non-zero exit for bad input.
#include <gtest/gtest.h>

#include "autograd/cpu/precision.h"

#include <cstdio>
#include <filesystem>

#include "infer/io/lora_io.h"
#include "tests/infer/golden.h"
#include "tests/tool_runner.h"

namespace lcd::testing {
namespace {

namespace fs = std::filesystem;
using ToolRun = CmdResult;

ToolRun run(const std::string& args) { return run_tool("lcm-sample", args); }

class LcmSampleCli : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!golden_available()) GTEST_SKIP() << "shared/golden not found";
    dir_ = fs::temp_directory_path() / ("lcdkit_cli_" + std::to_string(::getpid()));
    fs::create_directories(dir_);
    SafetensorsFile g = SafetensorsFile::read(golden_dir("diffusers-A/tensors.safetensors"));
    write_safetensors((dir_ / "cond.safetensors").string(),
                      {{"cond", g.tensor("unet.in.encoder_hidden_states")}, {"uncond", g.tensor("unet.in.uncond")}});
    write_safetensors((dir_ / "noise.safetensors").string(), {{"noise", g.tensor("sample.in.noise")}});
    expected_ = g.tensor("sample.ddim10.out");
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }
  fs::path dir_;
  Tensor expected_;
};

TEST_F(LcmSampleCli, DdimLatentsMatchTheGoldenTrajectory) {
  const ToolRun r = run("--unet " + golden_dir("diffusers-A/unet") + " --sampler ddim --steps 10 --guidance 3 --cond " +
                    path("cond.safetensors") + " --noise " + path("noise.safetensors") + " --batch 1 --precision fp32 --latents-out " +
                    path("latents.safetensors"));
  ASSERT_EQ(r.status, 0) << r.output;
  expect_whole_tensor_close(SafetensorsFile::read(path("latents.safetensors")).tensor("latents"), expected_, 1e-4,
                            "lcm-sample --latents-out");
}

// The same trajectory with bf16 GEMM operands, where the CPU has them. Ten guided DDIM steps of 20 UNet passes
// carry the operands' 2^-9 relative rounding through every layer of every pass (measured on a Xeon with AMX:
// 0.36% of the latents' range); the bound is 1e-2, and a wrong kernel misses it by orders of magnitude.
TEST_F(LcmSampleCli, DdimLatentsInBf16StayCloseToTheGoldenTrajectory) {
  if (!bf16_supported()) GTEST_SKIP() << "this CPU has no native bf16";
  const ToolRun r = run("--unet " + golden_dir("diffusers-A/unet") + " --sampler ddim --steps 10 --guidance 3 --cond " +
                    path("cond.safetensors") + " --noise " + path("noise.safetensors") + " --batch 1 --precision bf16 --latents-out " +
                    path("latents_bf16.safetensors"));
  ASSERT_EQ(r.status, 0) << r.output;
  expect_whole_tensor_close(SafetensorsFile::read(path("latents_bf16.safetensors")).tensor("latents"), expected_, 1e-2,
                            "lcm-sample --precision bf16 --latents-out");
}

TEST_F(LcmSampleCli, WritesGridAndPerSamplePngs) {
  const ToolRun r = run("--unet " + golden_dir("diffusers-A/unet") + " --vae " + golden_dir("diffusers-A/vae") +
                    " --steps 2 --cond " + path("cond.safetensors") + " --seed 3 --out " + path("grid.png") +
                    " --out-dir " + path("pngs"));
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_TRUE(fs::exists(path("grid.png")));
  EXPECT_TRUE(fs::exists(path("pngs/cond_0.png")));
  EXPECT_TRUE(fs::exists(path("pngs/cond_1.png")));
}

// One TCD step from t = 999 lands at s = ⌊(1 − γ)·0⌋ = 0 whatever γ, with no noise after the last step; one PCM
// phase jumps from 999 to the edge 0: the same DDIM jump, so the same latents bit for bit.
TEST_F(LcmSampleCli, OneTcdStepEqualsOnePcmPhase) {
  const std::string common = "--unet " + golden_dir("diffusers-A/unet") + " --steps 1 --cond " + path("cond.safetensors") +
                             " --noise " + path("noise.safetensors") + " --precision fp32 --latents-out ";
  const ToolRun tcd = run(common + path("tcd.safetensors") + " --sampler tcd --eta 0.6");
  const ToolRun pcm = run(common + path("pcm.safetensors") + " --sampler pcm");
  ASSERT_EQ(tcd.status, 0) << tcd.output;
  ASSERT_EQ(pcm.status, 0) << pcm.output;
  const Tensor a = SafetensorsFile::read(path("tcd.safetensors")).tensor("latents");
  const Tensor b = SafetensorsFile::read(path("pcm.safetensors")).tensor("latents");
  ASSERT_EQ(a.shape(), b.shape());
  EXPECT_TRUE(std::equal(a.data(), a.data() + a.numel(), b.data()));
}

// A PCM adapter records its phases (lcdkit.pcm_phases); --sampler pcm without --steps takes one step per phase.
TEST_F(LcmSampleCli, PcmStepsDefaultToTheAdaptersPhases) {
  LoraAdapter a = read_lora(golden_dir("diffusers-A/lora_peft.safetensors"));
  a.metadata["lcdkit.pcm_phases"] = "2";
  write_lora(path("pcm2.safetensors"), a, LoraFormat::kDiffusers);
  const std::string common = "--unet " + golden_dir("diffusers-A/unet") + " --lora " + path("pcm2.safetensors") +
                             " --sampler pcm --cond " + path("cond.safetensors") + " --noise " + path("noise.safetensors") +
                             " --precision fp32 --latents-out ";
  const ToolRun by_default = run(common + path("default.safetensors"));
  const ToolRun two = run(common + path("two.safetensors") + " --steps 2");
  const ToolRun four = run(common + path("four.safetensors") + " --steps 4");
  ASSERT_EQ(by_default.status, 0) << by_default.output;
  ASSERT_EQ(two.status, 0) << two.output;
  ASSERT_EQ(four.status, 0) << four.output;
  EXPECT_NE(by_default.output.find("pcm 2 steps"), std::string::npos) << by_default.output;
  auto latents = [&](const char* name) { return SafetensorsFile::read(path(name)).tensor("latents"); };
  const Tensor d = latents("default.safetensors"), t = latents("two.safetensors"), f = latents("four.safetensors");
  EXPECT_TRUE(std::equal(d.data(), d.data() + d.numel(), t.data()));
  EXPECT_FALSE(std::equal(d.data(), d.data() + d.numel(), f.data())) << "an explicit --steps wins";
}

TEST_F(LcmSampleCli, BadInputGivesOneErrorLineAndNonZeroExit) {
  const std::string unet = " --unet " + golden_dir("diffusers-A/unet");
  for (const std::string& args :
       {unet + " --cond " + path("missing.safetensors") + " --latents-out " + path("x.safetensors"),
        unet + " --cond " + path("noise.safetensors") + " --latents-out " + path("x.safetensors"),  // no tensor "cond"
        unet + " --cond " + path("cond.safetensors") + " --noise " + path("cond.safetensors") + " --latents-out x",
        unet + " --cond " + path("cond.safetensors") + " --steps zero --latents-out x",
        unet + " --cond " + path("cond.safetensors") + " --sampler euler --latents-out x",
        unet + " --cond " + path("cond.safetensors") + " --sampler tcd --eta 1.5 --latents-out x",
        unet + " --cond " + path("cond.safetensors") + " --sampler pcm --steps 60 --latents-out x",
        unet + " --cond " + path("cond.safetensors") + " --num 5 --latents-out x",
        unet + " --cond " + path("cond.safetensors"),  // no output
        std::string(" --model /nonexistent --labels 1 --out x.png")}) {
    const ToolRun r = run(args);
    EXPECT_NE(r.status, 0) << args;
    EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 1) << args << "\n" << r.output;
    EXPECT_EQ(r.output.rfind("lcm-sample: error: ", 0), 0u) << r.output;
  }
}

}  // namespace
}  // namespace lcd::testing
