// lora-merge against golden/diffusers-A and independent float64 computations.
#include <gtest/gtest.h>

#include <Eigen/Dense>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "autograd/errors.h"
#include "infer/io/lora_io.h"
#include "infer/io/model_io.h"
#include "infer/lora_math.h"
#include "tests/infer/golden.h"
#include "tests/tool_runner.h"

namespace lcd::testing {
namespace {

namespace fs = std::filesystem;
using MatD = Eigen::MatrixXd;

// ΔW = scale · B A in float64, independently of lora_delta.
MatD delta(const LoraFactors& f, double weight) {
  const int64_t r = f.rank(), out = f.up.size(0), in = f.down.numel() / r;
  MatD a(r, in), b(out, r);
  for (int64_t i = 0; i < r; ++i)
    for (int64_t j = 0; j < in; ++j) a(i, j) = f.down.data()[i * in + j];
  for (int64_t i = 0; i < out; ++i)
    for (int64_t j = 0; j < r; ++j) b(i, j) = f.up.data()[i * r + j];
  return weight * f.alpha / r * b * a;
}

class LoraMergeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!golden_available()) GTEST_SKIP() << "shared/golden not found";
    dir_ = fs::temp_directory_path() / ("lcdkit_merge_" + std::to_string(::getpid()));
    fs::create_directories(dir_);
    peft_ = golden_dir("diffusers-A/lora_peft.safetensors");
    kohya_ = golden_dir("diffusers-A/lora_kohya.safetensors");
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string path(const std::string& n) const { return (dir_ / n).string(); }
  fs::path dir_;
  std::string peft_, kohya_;
};

TEST_F(LoraMergeTest, CombineOfTheSameAdapterInBothStylesIsExact) {
  const CmdResult r = run_tool("lora-merge", "combine " + path("sum.safetensors") + " " + peft_ + ":0.7 " + kohya_ + ":-0.2");
  ASSERT_EQ(r.status, 0) << r.output;
  const LoraAdapter sum = read_lora(path("sum.safetensors")), ref = read_lora(peft_);
  ASSERT_EQ(sum.modules.size(), ref.modules.size());
  for (const auto& [name, f] : ref.modules) {
    const MatD want = delta(f, 0.5), got = delta(sum.modules.at(name), 1.0);
    EXPECT_LE((got - want).norm(), 1e-6 * want.norm()) << name;
    EXPECT_EQ(sum.modules.at(name).rank(), 2 * f.rank());
  }
  EXPECT_NE(sum.metadata.at("lcdkit.merge_recipe").find("lora_kohya.safetensors"), std::string::npos);
}

TEST_F(LoraMergeTest, SvdErrorEqualsTheNormOfTheDiscardedSingularValues) {
  LoraAdapter a = read_lora(peft_), b = read_lora(kohya_);
  // Make the two differ so the sum has rank 8: b's B factors get a fixed perturbation.
  for (auto& [name, f] : b.modules)
    for (int64_t i = 0; i < f.up.numel(); ++i) f.up.data()[i] += 0.01f * float((i * 7919) % 13 - 6);
  TruncationReport report;
  const LoraAdapter merged = combine_svd({{&a, 0.6, "a"}, {&b, -1.1, "b"}}, 5, 0, &report);
  ASSERT_EQ(report.modules.size(), a.modules.size());
  double discarded_total = 0, norm_total = 0;
  for (const auto& m : report.modules) {
    const MatD full = delta(a.modules.at(m.name), 0.6) + delta(b.modules.at(m.name), -1.1);
    Eigen::JacobiSVD<MatD> svd(full);
    const Eigen::VectorXd s = svd.singularValues();
    const double discarded = s.tail(s.size() - 5).norm();
    EXPECT_NEAR(m.error, discarded, 1e-9 * s.norm() + 1e-12) << m.name;
    EXPECT_NEAR(m.norm, s.norm(), 1e-9 * s.norm()) << m.name;
    // The truncated adapter is the best rank-5 approximation: its error is exactly the discarded part.
    const MatD approx = delta(merged.modules.at(m.name), 1.0);
    EXPECT_NEAR((full - approx).norm(), discarded, 1e-5 * s.norm() + 1e-9) << m.name;
    discarded_total += discarded * discarded;
    norm_total += s.squaredNorm();
  }
  EXPECT_NEAR(report.total_error() / report.total_norm(), std::sqrt(discarded_total / norm_total), 1e-9);
  const CmdResult r = run_tool("lora-merge", "combine " + path("svd.safetensors") + " " + peft_ + " " + kohya_ +
                                                 ":0.5 --method svd --rank 2");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("overall relative Frobenius error"), std::string::npos) << r.output;
}

TEST_F(LoraMergeTest, FoldThenLcmSampleReproducesTheGoldenLoraOutput) {
  const CmdResult r = run_tool("lora-merge", "fold --unet " + golden_dir("diffusers-A/unet") + " --out " + path("folded") + " " + peft_);
  ASSERT_EQ(r.status, 0) << r.output;
  SafetensorsFile g = SafetensorsFile::read(golden_dir("diffusers-A/tensors.safetensors"));
  write_safetensors(path("cond.safetensors"), {{"cond", g.tensor("unet.in.encoder_hidden_states")}});
  write_safetensors(path("noise.safetensors"), {{"noise", g.tensor("sample.in.noise")}});
  const CmdResult s = run_tool("lcm-sample", "--unet " + path("folded") + " --steps 1 --cond " + path("cond.safetensors") +
                                                 " --noise " + path("noise.safetensors") + " --precision fp32 --latents-out " + path("lat.safetensors"));
  ASSERT_EQ(s.status, 0) << s.output;
  expect_whole_tensor_close(SafetensorsFile::read(path("lat.safetensors")).tensor("latents"), g.tensor("lora.lcm1.out"), 1e-4,
                            "fold + lcm-sample");
  auto unet = load_unet(path("folded"));
  NoGradGuard no_grad;
  Tensor t = g.tensor("unet.in.timesteps");
  expect_whole_tensor_close(unet->forward(g.tensor("unet.in.sample"), {t.data()[0], t.data()[1]}, g.tensor("unet.in.encoder_hidden_states")),
                            g.tensor("lora.unet.out"), 1e-4, "folded UNet");
}

TEST_F(LoraMergeTest, ExtractRecoversAFoldedAdapter) {
  // tuned = base + ΔW of a rank-4 adapter, so a rank-4 extraction recovers ΔW up to float32 rounding.
  ASSERT_EQ(run_tool("lora-merge", "fold --unet " + golden_dir("diffusers-A/unet") + " --out " + path("tuned") + " " + peft_).status, 0);
  const CmdResult r = run_tool("lora-merge", "extract --base " + golden_dir("diffusers-A/unet") + " --tuned " + path("tuned") +
                                                 " --rank 4 " + path("x.safetensors"));
  ASSERT_EQ(r.status, 0) << r.output;
  const LoraAdapter x = read_lora(path("x.safetensors")), ref = read_lora(peft_);
  ASSERT_EQ(x.modules.size(), ref.modules.size());
  for (const auto& [name, f] : ref.modules) {
    const MatD want = delta(f, 1.0), got = delta(x.modules.at(name), 1.0);
    EXPECT_LE((got - want).norm(), 1e-4 * want.norm()) << name;  // float32 weights: W + ΔW − W loses ~1e-7·|W|
  }
  EXPECT_NE(r.output.find("overall relative Frobenius error"), std::string::npos);
}

TEST_F(LoraMergeTest, ConvertRoundTripsAreLosslessForF32) {
  ASSERT_EQ(run_tool("lora-merge", "convert " + peft_ + " " + path("k.safetensors") + " --format kohya").status, 0);
  ASSERT_EQ(run_tool("lora-merge", "convert " + path("k.safetensors") + " " + path("h.h5") + " --format hdf5").status, 0);
  ASSERT_EQ(run_tool("lora-merge", "convert " + path("h.h5") + " " + path("d.safetensors") + " --format diffusers").status, 0);
  ASSERT_EQ(run_tool("lora-merge", "convert " + path("d.safetensors") + " " + path("p") + " --format peft").status, 0);
  const LoraAdapter a = read_lora(peft_), b = read_lora(path("p"));
  ASSERT_EQ(a.modules.size(), b.modules.size());
  for (const auto& [name, f] : a.modules) {
    const LoraFactors& g = b.modules.at(name);
    EXPECT_EQ(f.alpha, g.alpha);
    ASSERT_EQ(f.down.shape(), g.down.shape());
    EXPECT_EQ(0, std::memcmp(f.down.data(), g.down.data(), sizeof(float) * f.down.numel())) << name;
    EXPECT_EQ(0, std::memcmp(f.up.data(), g.up.data(), sizeof(float) * f.up.numel())) << name;
  }
  const CmdResult i = run_tool("lora-merge", "inspect " + path("k.safetensors"));
  ASSERT_EQ(i.status, 0) << i.output;
  EXPECT_NE(i.output.find("kohya keys"), std::string::npos);
  EXPECT_NE(i.output.find("117 modules"), std::string::npos);
}

TEST_F(LoraMergeTest, BadInputsGiveAnErrorAndNoOutputFile) {
  // A shape mismatch between adapters for the same module.
  LoraAdapter odd = read_lora(peft_);
  auto& f = odd.modules.begin()->second;
  f.down = Tensor::zeros({4, 3});
  f.up = Tensor::zeros({5, 4});
  write_lora(path("odd.safetensors"), odd, LoraFormat::kDiffusers);
  // A key that maps to no UNet module, and a corrupt file.
  write_safetensors(path("alien.safetensors"), {{"lora_te_text_model_encoder_layers_0_mlp_fc1.lora_down.weight", Tensor::zeros({2, 8})}});
  std::ofstream(path("corrupt.safetensors")) << "\x10\0\0\0\0\0\0\0{\"a\": 1}";
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"combine " + path("o1.safetensors") + " " + peft_ + " " + path("odd.safetensors"), "o1.safetensors"},
      {"combine " + path("o2.safetensors") + " " + path("alien.safetensors"), "o2.safetensors"},
      {"combine " + path("o3.safetensors") + " " + path("corrupt.safetensors"), "o3.safetensors"},
      {"combine " + path("o4.safetensors") + " " + path("missing.safetensors"), "o4.safetensors"},
      {"convert " + path("odd.safetensors") + " " + path("odd.safetensors") + " --format kohya", ""},
      {"combine " + path("o5.safetensors") + " " + peft_ + " --method svd", "o5.safetensors"},
      {"fold --unet " + golden_dir("diffusers-A/unet") + " --out " + path("f1") + " " + path("odd.safetensors"), "f1"},
  };
  for (const auto& [args, output] : cases) {
    const CmdResult r = run_tool("lora-merge", args);
    EXPECT_NE(r.status, 0) << args << "\n" << r.output;
    EXPECT_NE(r.output.find("lora-merge: error: "), std::string::npos) << r.output;
    if (!output.empty()) {
      EXPECT_FALSE(fs::exists(dir_ / output)) << args;
    }
  }
  EXPECT_TRUE(fs::exists(path("odd.safetensors"))) << "an input must never be overwritten";
  // --allow-unmatched skips and counts instead.
  const CmdResult ok = run_tool("lora-merge", "combine " + path("o6.safetensors") + " " + peft_ + " " +
                                                  path("alien.safetensors") + " --allow-unmatched");
  EXPECT_NE(ok.status, 0) << "an adapter with no UNet module at all is still an error: " << ok.output;
}

}  // namespace
}  // namespace lcd::testing
