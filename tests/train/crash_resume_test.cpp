// kill -9 anywhere, then --resume: lcd-train runs as a subprocess that kills itself (LCDKIT_CRASH_AT, see
// autograd/crash_points.h) mid-step, half-way through a checkpoint's temp file, between a checkpoint's rename
// and the pruning, and half-way through a metrics line; resumed to the end, every run must give adapters
// byte-identical to an uninterrupted run's, the same logged steps (every one, once), and no temp files. And the
// documented recovery from a non-finite loss: --resume with a lower optim.lr continues from the last regular
// checkpoint and records the change.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "infer/io/lora_io.h"
#include "tests/tool_runner.h"
#include "tests/train/run_files.h"
#include "tests/train/tiny_model.h"

namespace lcd::testing {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;


class CrashResume : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    root_ = fs::temp_directory_path() / ("lcdkit_crash_" + std::to_string(::getpid()));
    fs::remove_all(root_);
    fs::create_directories(root_);
    write_tiny_model_and_images(root_, 4);
  }
  static void TearDownTestSuite() { fs::remove_all(root_); }

  // A config for a run in `run`: 10 steps, checkpoints every 3 and logs every 2 (not multiples of each other).
  static fs::path config(const std::string& run, const json& changes = json::object()) {
    json c = {{"model", (root_ / "model").string()},
              {"output_dir", (root_ / run).string()},
              {"seed", 11},
              {"data", {{"source", "folder"}, {"path", (root_ / "images").string()}, {"latent_cache", (root_ / "lat.h5").string()}}},
              {"lora", {{"rank", 2}, {"alpha", 2}}},
              {"lcd", {{"ema_decay", 0.9}}},
              {"train", {{"steps", 10}, {"batch_size", 4}, {"precision", "fp32"}}},
              {"checkpoint", {{"every", 3}, {"keep", 2}}},
              {"log", {{"every", 2}}},
              {"samples", {{"every", 0}, {"labels", {0}}, {"per_label", 1}, {"lcm_steps", {1}}}}};
    c.merge_patch(changes);
    const fs::path path = root_ / (run + ".json");
    std::ofstream(path) << c.dump(2);
    return path;
  }
  static fs::path root_;
};
fs::path CrashResume::root_;

TEST_F(CrashResume, KillAnywhereThenResumeGivesTheUninterruptedRun) {
  const CmdResult ref = run_tool("lcd-train", config("reference").string());
  ASSERT_EQ(ref.status, 0) << ref.output;
  const std::vector<json> ref_metrics = logged_metrics(root_ / "reference");
  ASSERT_EQ(ref_metrics.size(), 10u);

#ifndef LCDKIT_SANITIZED
  const std::vector<std::pair<std::string, int>> kills = {
      {"step", 2},           {"step", 5},           {"step", 10},          {"metrics-line", 4}, {"metrics-line", 7},
      {"checkpoint-write", 1}, {"checkpoint-write", 2}, {"checkpoint-renamed", 2}, {"checkpoint-renamed", 3}};
#else  // each point once under ASan, where a run costs ten times as much
  const std::vector<std::pair<std::string, int>> kills = {
      {"step", 5}, {"metrics-line", 7}, {"checkpoint-write", 2}, {"checkpoint-renamed", 3}};
#endif
  for (const auto& [point, n] : kills) {
    const std::string run = "kill-" + point + "-" + std::to_string(n);
    SCOPED_TRACE(run);
    const fs::path cfg = config(run);
    const CmdResult killed = run_tool("lcd-train", cfg.string(), "LCDKIT_CRASH_AT=" + point + ":" + std::to_string(n));
    ASSERT_TRUE(killed.status == -1 || killed.status == 128 + 9) << "expected a SIGKILL at " << point << ":" << n << "\n" << killed.output;
    const fs::path dir = root_ / run;
    // Resume (or, killed before the first checkpoint, start again: resume says there is nothing to resume).
    CmdResult done = run_tool("lcd-train", cfg.string() + " --resume " + dir.string());
    if (done.status != 0 && done.output.find("no checkpoint") != std::string::npos)
      done = run_tool("lcd-train", cfg.string());
    ASSERT_EQ(done.status, 0) << done.output;
    EXPECT_EQ(logged_metrics(dir), ref_metrics) << "every step logged once, as in the uninterrupted run";
    for (const char* f : {"adapter/pytorch_lora_weights.safetensors", "adapter/adapter.h5", "adapter_ema/adapter_kohya.safetensors"})
      EXPECT_TRUE(slurp(dir / f) == slurp(root_ / "reference" / f)) << f << " differs from the uninterrupted run's";
    for (const auto& e : fs::recursive_directory_iterator(dir))
      EXPECT_EQ(e.path().filename().string().find(".tmp."), std::string::npos) << "stale temp file " << e.path();
  }
}

TEST_F(CrashResume, ADamagedNewestCheckpointFallsBackToThePreviousOne) {
  const CmdResult ref = run_tool("lcd-train", config("reference-2").string());
  ASSERT_EQ(ref.status, 0) << ref.output;
  const fs::path cfg = config("damaged");
  const CmdResult killed = run_tool("lcd-train", cfg.string(), "LCDKIT_CRASH_AT=step:8");  // checkpoints at 3 and 6
  ASSERT_TRUE(killed.status == -1 || killed.status == 128 + 9) << killed.output;
  const fs::path newest = root_ / "damaged/checkpoints/checkpoint-000006.h5";
  ASSERT_TRUE(fs::exists(newest));
  const std::string bytes = slurp(newest);
  std::ofstream(newest, std::ios::binary | std::ios::trunc) << bytes.substr(0, bytes.size() / 3);  // a disk that lost its tail
  const CmdResult done = run_tool("lcd-train", cfg.string() + " --resume " + (root_ / "damaged").string());
  ASSERT_EQ(done.status, 0) << done.output;
  EXPECT_NE(done.output.find("skipping a damaged checkpoint"), std::string::npos) << done.output;
  EXPECT_EQ(logged_metrics(root_ / "damaged"), logged_metrics(root_ / "reference-2"));
  EXPECT_TRUE(slurp(root_ / "damaged/adapter/pytorch_lora_weights.safetensors") ==
              slurp(root_ / "reference-2/adapter/pytorch_lora_weights.safetensors"));
}

TEST_F(CrashResume, AfterANonFiniteLossResumeWithALowerLrContinuesFromTheLastRegularCheckpoint) {
  // A learning rate this large makes the loss non-finite within a few steps (measured: at step 3).
  const json diverging = {{"optim", {{"lr", 30.0}, {"max_grad_norm", 0.0}}}, {"checkpoint", {{"every", 1}, {"keep", 20}}},
                          {"train", {{"steps", 12}}}};
  const fs::path cfg = config("nan", diverging);
  const CmdResult failed = run_tool("lcd-train", cfg.string());
  ASSERT_EQ(failed.status, 1) << failed.output;
  ASSERT_NE(failed.output.find("optim.lr"), std::string::npos) << "the advice names the setting: " << failed.output;
  const fs::path dir = root_ / "nan";
  // The emergency checkpoint holds the state after the last finite step k; the recovery must go back further,
  // to the newest regular checkpoint before k.
  int64_t emergency_step = -1;
  std::vector<int64_t> regular;
  for (const auto& e : fs::directory_iterator(dir / "checkpoints")) {
    const std::string name = e.path().filename().string();
    const int64_t step = std::stoll(name.substr(11, 6));
    if (name.find("-emergency") != std::string::npos) emergency_step = step;
    else regular.push_back(step);
  }
  ASSERT_GE(emergency_step, 2) << failed.output;
  int64_t expected_step = 0;
  for (int64_t r : regular)
    if (r < emergency_step) expected_step = std::max(expected_step, r);
  ASSERT_GE(expected_step, 1) << failed.output;

  // The documented recovery: lower optim.lr in the config, then --resume.
  json changed = diverging;
  changed["optim"]["lr"] = 1e-4;
  const fs::path lower = config("nan-lower", changed);
  json c = json::parse(slurp(lower));
  c["output_dir"] = dir.string();
  std::ofstream(lower) << c.dump(2);
  const CmdResult resumed = run_tool("lcd-train", lower.string() + " --resume " + dir.string());
  ASSERT_EQ(resumed.status, 0) << resumed.output;
  // It resumed from the newest regular checkpoint, not from the emergency one of the diverging state.
  std::ifstream history(dir / "config_history.jsonl");
  std::vector<json> entries;
  for (std::string l; std::getline(history, l);) entries.push_back(json::parse(l));
  ASSERT_EQ(entries.size(), 2u);
  EXPECT_EQ(entries[1]["event"], "resume");
  EXPECT_EQ(entries[1]["step"].get<int64_t>(), expected_step);
  EXPECT_EQ(entries[1]["checkpoint"].get<std::string>().find("emergency"), std::string::npos) << entries[1].dump();
  EXPECT_EQ(entries[1]["changed"]["optim.lr"], json({30.0, 1e-4})) << entries[1].dump();
  // The run finished with finite weights and every step logged once.
  const LoraAdapter a = read_lora((dir / "adapter/adapter.h5").string());
  EXPECT_FALSE(a.modules.empty());
  const auto lines = logged_metrics(dir);
  ASSERT_EQ(lines.size(), 12u);
  for (size_t i = 0; i < lines.size(); ++i) EXPECT_EQ(lines[i]["step"].get<size_t>(), i + 1);
  // A changed computation (anything but the advised settings) is still refused on resume.
  json other = c;
  other["lcd"]["huber_c"] = 0.5;
  std::ofstream(lower) << other.dump(2);
  const CmdResult refused = run_tool("lcd-train", lower.string() + " --resume " + dir.string());
  EXPECT_NE(refused.status, 0);
  EXPECT_NE(refused.output.find("lcd.huber_c"), std::string::npos) << refused.output;
}

}  // namespace
}  // namespace lcd::testing
