// Multi-process lcd-train under mpirun (train/distributed.h), end to end on the tiny model: two processes give
// the one-process run's losses and adapters (up to the order of float sums), and the same bits run to run; a
// process that dies, hangs or fails on bad input ends the run on every process with one line from rank 0 and
// the last checkpoint intact; --resume with two processes and with one finishes the run. Built only with MPI.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>

#include "infer/io/lora_io.h"
#include "train/checkpoint.h"
#include "tests/tool_runner.h"
#include "tests/train/run_files.h"
#include "tests/train/tiny_model.h"

namespace lcd::testing {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;


int count_lines_with(const std::string& text, const std::string& what) {
  int n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

// mpirun as CI runs it: as root, more processes than cores allowed, shared memory without the cross-memory
// attach that containers forbid. One MPMD app context per rank: {environment prefix, lcd-train's arguments},
// e.g. {"env LCDKIT_CRASH_AT=step:3", args} for a rank that kills itself.
struct Rank {
  std::string env, args;
};
CmdResult mpirun(const std::vector<Rank>& ranks) {
  std::string cmd = "env OMPI_MCA_btl_vader_single_copy_mechanism=none " + std::string(LCDKIT_MPIEXEC) +
                    " --allow-run-as-root --oversubscribe";
  for (size_t i = 0; i < ranks.size(); ++i)
    cmd += std::string(i ? " :" : "") + " -np 1 " + ranks[i].env + " " + LCDKIT_BINARY_DIR + "/lcd-train " + ranks[i].args;
  return run_command(cmd);
}
CmdResult mpirun2(const std::string& args) { return mpirun({{"", args}, {"", args}}); }

// Largest |a − b| over the largest |a|, per tensor, over every factor of two adapters.
double max_relative_difference(const fs::path& a_file, const fs::path& b_file) {
  const LoraAdapter a = read_lora(a_file.string()), b = read_lora(b_file.string());
  EXPECT_EQ(a.modules.size(), b.modules.size());
  double worst = 0;
  auto compare = [&](const Tensor& x, const Tensor& y) {
    EXPECT_EQ(x.shape(), y.shape());
    double diff = 0, scale = 0;
    for (int64_t i = 0; i < x.numel(); ++i) {
      diff = std::max(diff, std::abs(double(x.data()[i]) - double(y.data()[i])));
      scale = std::max(scale, std::abs(double(x.data()[i])));
    }
    if (scale > 0) worst = std::max(worst, diff / scale);
  };
  for (const auto& [name, layer] : a.modules) {
    auto it = b.modules.find(name);
    if (it == b.modules.end()) {
      ADD_FAILURE() << name << " missing";
      continue;
    }
    compare(layer.down, it->second.down);
    compare(layer.up, it->second.up);
  }
  return worst;
}

class MpiTrain : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    root_ = fs::temp_directory_path() / ("lcdkit_mpi_" + std::to_string(::getpid()));
    fs::remove_all(root_);
    fs::create_directories(root_);
    write_tiny_model_and_images(root_, 16);  // 64 images
  }
  static void TearDownTestSuite() { fs::remove_all(root_); }

  // 20 steps at batch 64, checkpoints every 5, an EMA target. With two processes each computes 32 rows, which
  // it cuts into the same 16-sample parts (autograd/batch_parallel.h) as one process cuts the 64: every part is
  // computed as in the one-process run, and only the order of the float sums of the parts' gradients differs.
  // The L2 loss: pseudo-Huber with c = 0.001 is 1/c times steeper near pred = target, so it turns a rounding
  // difference of 1e-7 there into gradient differences of up to 1e-4 (measured: 3e-5 in the gradient norm).
  static std::string config(const std::string& run, const json& changes = json::object()) {
    json c = {{"model", (root_ / "model").string()},
              {"output_dir", (root_ / run).string()},
              {"seed", 5},
              {"threads", 1},
              {"data", {{"source", "folder"}, {"path", (root_ / "images").string()}, {"latent_cache", (root_ / "lat.h5").string()}}},
              {"lora", {{"rank", 2}, {"alpha", 2}}},
              {"lcd", {{"ema_decay", 0.9}, {"guidance_min", 2.0}, {"guidance_max", 4.0}, {"loss", "l2"}}},
              {"train", {{"steps", 20}, {"batch_size", 64}, {"precision", "fp32"}}},
              {"checkpoint", {{"every", 5}, {"keep", 10}}},
              {"log", {{"every", 5}}},
              {"samples", {{"every", 0}, {"labels", {0}}, {"per_label", 1}, {"lcm_steps", {1}}}}};
    c.merge_patch(changes);
    const fs::path path = root_ / (run + ".json");
    std::ofstream(path) << c.dump(2);
    return path.string();
  }
  static const fs::path& reference() {  // the one-process run, without mpirun
    static const fs::path dir = [] {
      const CmdResult r = run_tool("lcd-train", config("one-process"));
      EXPECT_EQ(r.status, 0) << r.output;
      return root_ / "one-process";
    }();
    return dir;
  }
  static fs::path root_;
};
fs::path MpiTrain::root_;

constexpr const char* kAdapter = "adapter/pytorch_lora_weights.safetensors";
constexpr const char* kEmaAdapter = "adapter_ema/pytorch_lora_weights.safetensors";

void expect_losses_match(const fs::path& a, const fs::path& b, double tolerance) {
  const std::vector<json> ma = logged_metrics(a), mb = logged_metrics(b);
  ASSERT_EQ(ma.size(), mb.size());
  for (size_t i = 0; i < ma.size(); ++i)
    for (const char* key : {"loss", "loss_huber", "loss_l2", "grad_norm"}) {
      const double x = ma[i][key], y = mb[i][key];
      EXPECT_LE(std::abs(x - y), tolerance * std::abs(x)) << key << " at step " << ma[i]["step"] << ": " << x << " vs " << y;
    }
}

TEST_F(MpiTrain, TwoProcessesGiveTheOneProcessRunAndTheSameBitsRunToRun) {
  const CmdResult first = mpirun2(config("two-a"));
  ASSERT_EQ(first.status, 0) << first.output;
  EXPECT_NE(first.output.find("2 processes × 1 threads"), std::string::npos) << first.output;
  EXPECT_EQ(count_lines_with(first.output, "step 20/20"), 1) << "rank 0 alone reports progress:\n" << first.output;
  {
    std::ifstream in(root_ / "two-a/metrics.jsonl");
    std::string l;
    std::getline(in, l);
    EXPECT_TRUE(json::parse(l).contains("comm_time")) << "metrics say how long the step waited for the others: " << l;
  }
  const CmdResult second = mpirun2(config("two-b"));
  ASSERT_EQ(second.status, 0) << second.output;

  // Up to float summation order: losses, gradient norms and both adapters within 1e-6 relative after 20 steps.
  expect_losses_match(reference(), root_ / "two-a", 1e-6);
  std::cout << "two processes vs one, after 20 steps: adapter "
            << max_relative_difference(reference() / kAdapter, root_ / "two-a" / kAdapter) << ", EMA adapter "
            << max_relative_difference(reference() / kEmaAdapter, root_ / "two-a" / kEmaAdapter) << " (relative)\n";
  EXPECT_LE(max_relative_difference(reference() / kAdapter, root_ / "two-a" / kAdapter), 1e-6);
  EXPECT_LE(max_relative_difference(reference() / kEmaAdapter, root_ / "two-a" / kEmaAdapter), 1e-6);
  // Reproducible for a given number of processes: the same bits.
  EXPECT_EQ(logged_metrics(root_ / "two-a"), logged_metrics(root_ / "two-b"));
  for (const char* f : {kAdapter, kEmaAdapter, "adapter/adapter.h5"})
    EXPECT_TRUE(slurp(root_ / "two-a" / f) == slurp(root_ / "two-b" / f)) << f;
  const TrainingState ca = load_checkpoint((root_ / "two-a/checkpoints/checkpoint-000020.h5").string());
  const TrainingState cb = load_checkpoint((root_ / "two-b/checkpoints/checkpoint-000020.h5").string());
  EXPECT_TRUE(ca.params == cb.params && ca.ema == cb.ema && ca.adam_m == cb.adam_m && ca.adam_v == cb.adam_v);
  EXPECT_EQ(ca.rng_state, cb.rng_state);
  // Rank 0 alone writes: one start entry, with the number of processes.
  const json history = json::parse(slurp(root_ / "two-a/config_history.jsonl"));
  EXPECT_EQ(history["processes"], 2);
}

TEST_F(MpiTrain, AKilledProcessEndsTheRunAndResumeWithTwoOrOneProcessFinishesIt) {
  const CmdResult uninterrupted = mpirun2(config("two-whole"));
  ASSERT_EQ(uninterrupted.status, 0) << uninterrupted.output;
  // Rank 1 dies by SIGKILL in step 13 (checkpoints at 5 and 10).
  const CmdResult killed = mpirun({{"", config("killed")}, {"env LCDKIT_CRASH_AT=step:13", config("killed")}});
  EXPECT_NE(killed.status, 0) << killed.output;
  const fs::path dir = root_ / "killed";
  // Rank 0, stopped by mpirun while it waited for rank 1, saves the last good state and says so in one line.
  EXPECT_EQ(count_lines_with(killed.output, "lcd-train: error:"), 1) << killed.output;
  EXPECT_NE(killed.output.find("stopped by a signal"), std::string::npos) << killed.output;
  EXPECT_NE(killed.output.find("--resume " + dir.string()), std::string::npos) << killed.output;
  ASSERT_TRUE(fs::exists(dir / "checkpoints/checkpoint-000010.h5")) << killed.output;
  EXPECT_FALSE(fs::exists(dir / kAdapter)) << "a run that ended early exports nothing";
  fs::copy(dir, root_ / "killed-copy", fs::copy_options::recursive);

  // Two processes continue bit for bit.
  const CmdResult resumed = mpirun2(config("killed") + " --resume " + dir.string());
  ASSERT_EQ(resumed.status, 0) << resumed.output;
  EXPECT_TRUE(slurp(dir / kAdapter) == slurp(root_ / "two-whole" / kAdapter));
  EXPECT_EQ(logged_metrics(dir), logged_metrics(root_ / "two-whole"));
  // One process continues the same run (different only in the order of float sums).
  const CmdResult alone = run_tool("lcd-train", config("killed") + " --resume " + (root_ / "killed-copy").string());
  ASSERT_EQ(alone.status, 0) << alone.output;
  EXPECT_LE(max_relative_difference(root_ / "killed-copy" / kAdapter, root_ / "two-whole" / kAdapter), 1e-6);
  expect_losses_match(root_ / "killed-copy", root_ / "two-whole", 1e-6);
}

TEST_F(MpiTrain, AHungProcessEndsTheRunAfterTheTimeout) {
  // Rank 1 stops (SIGSTOP) in step 8; rank 0 gives up after 3 s, saves the last good state and says so.
  const std::string args = config("hung") + " --mpi-timeout 3";
  const CmdResult hung = mpirun({{"", args}, {"env LCDKIT_CRASH_AT=step:8:stop", args}});
  EXPECT_NE(hung.status, 0) << hung.output;
  EXPECT_NE(hung.output.find("no answer from the other processes for 3 s"), std::string::npos) << hung.output;
  EXPECT_NE(hung.output.find("--resume " + (root_ / "hung").string()), std::string::npos) << hung.output;
  EXPECT_EQ(count_lines_with(hung.output, "lcd-train: error:"), 1) << hung.output;
  EXPECT_TRUE(fs::exists(root_ / "hung/checkpoints/checkpoint-000005.h5"));
  const CmdResult resumed = mpirun2(config("hung") + " --resume " + (root_ / "hung").string());
  ASSERT_EQ(resumed.status, 0) << resumed.output;
}

TEST_F(MpiTrain, BadInputOnOneProcessEndsEveryProcessWithOneLineFromRankZero) {
  const CmdResult bad = mpirun2(config("bad") + " --threads 0");  // both ranks refuse the flag
  EXPECT_EQ(bad.status, 2) << bad.output;
  EXPECT_EQ(count_lines_with(bad.output, "lcd-train: error:"), 1) << bad.output;
  // Only rank 1 meets a missing data folder: it fails while loading, after rank 0 has loaded; rank 0 reports it
  // and nothing is written.
  const std::string broken = config("one-bad-broken", {{"output_dir", (root_ / "one-bad").string()},
                                                        {"data", {{"path", (root_ / "no-such-images").string()},
                                                                  {"latent_cache", (root_ / "other-lat.h5").string()}}}});
  const CmdResult one = mpirun({{"", config("one-bad")}, {"", broken}});
  EXPECT_EQ(one.status, 1) << one.output;
  EXPECT_EQ(count_lines_with(one.output, "lcd-train: error:"), 1) << one.output;
  EXPECT_NE(one.output.find("lcd-train: error: rank 1: "), std::string::npos) << one.output;
  EXPECT_NE(one.output.find("no-such-images"), std::string::npos) << one.output;
  EXPECT_FALSE(fs::exists(root_ / "one-bad")) << "nothing is written before every process has loaded";
}

TEST_F(MpiTrain, ANonFiniteLossStopsEveryProcessAndKeepsTheLastGoodState) {
  const json diverging = {{"optim", {{"lr", 30.0}, {"max_grad_norm", 0.0}}}, {"checkpoint", {{"every", 1}, {"keep", 30}}}};
  const CmdResult failed = mpirun2(config("nan", diverging));
  EXPECT_EQ(failed.status, 1) << failed.output;
  EXPECT_EQ(count_lines_with(failed.output, "lcd-train: error:"), 1) << failed.output;
  EXPECT_NE(failed.output.find("optim.lr"), std::string::npos) << failed.output;
  bool emergency = false;
  for (const auto& e : fs::directory_iterator(root_ / "nan/checkpoints"))
    emergency |= e.path().filename().string().find("-emergency") != std::string::npos;
  EXPECT_TRUE(emergency) << failed.output;
}

}  // namespace
}  // namespace lcd::testing
