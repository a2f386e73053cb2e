// lcd-train's loop on a tiny model: a resumed run equals an uninterrupted one bit for bit, a NaN stops the run
// with an emergency checkpoint and keeps the last good one, an existing run is never overwritten, and config
// errors name the key and the value.
#include <gtest/gtest.h>

#include <fstream>
#include <regex>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "autograd/cpu/precision.h"
#include "autograd/errors.h"
#include "autograd/threads.h"
#include "infer/io/lora_io.h"
#include "tests/tool_runner.h"
#include "tests/train/run_files.h"
#include "tests/train/tiny_model.h"
#include "train/checkpoint.h"
#include "train/config.h"
#include "train/trainer.h"

namespace lcd::testing {
namespace {

namespace fs = std::filesystem;

class TrainerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("lcdkit_trainer_" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    model_ = write_tiny_model_and_images(dir_, 16);
  }
  void TearDown() override {
    fs::remove_all(dir_);
    set_compute_precision(Precision::kFp32);  // a Trainer sets the process's precision and threads
    set_num_threads(2);
  }

  nlohmann::json config(const std::string& run, int steps, const std::string& objective = "lcd") const {
    return {{"objective", objective},
            {"model", model_},
            {"output_dir", (dir_ / run).string()},
            {"seed", 5},
            {"data", {{"source", "folder"}, {"path", (dir_ / "images").string()}, {"latent_cache", (dir_ / "lat.h5").string()}}},
            {"lora", {{"rank", 2}, {"alpha", 4}}},
            {"lcd", {{"guidance_min", 1.5}, {"guidance_max", 3.0}, {"ema_decay", 0.9}}},
            {"train", {{"steps", steps}, {"batch_size", 4}}},
            {"checkpoint", {{"every", 3}, {"keep", 2}}},
            {"log", {{"every", 100}}},
            {"samples", {{"every", 0}, {"labels", {0, 1}}, {"per_label", 1}, {"lcm_steps", {1}}, {"teacher_steps", 2}}}};
  }
  fs::path dir_;
  std::string model_;
};

void expect_same_adapter(const std::string& a, const std::string& b) {
  LoraAdapter x = read_lora(a), y = read_lora(b);
  ASSERT_EQ(x.modules.size(), y.modules.size());
  for (const auto& [name, f] : x.modules) {
    const LoraFactors& g = y.modules.at(name);
    for (int64_t i = 0; i < f.down.numel(); ++i) ASSERT_EQ(f.down.data()[i], g.down.data()[i]) << name;
    for (int64_t i = 0; i < f.up.numel(); ++i) ASSERT_EQ(f.up.data()[i], g.up.data()[i]) << name;
  }
  ASSERT_EQ(x.full_weights.size(), y.full_weights.size());
  for (const auto& [name, t] : x.full_weights)
    for (int64_t i = 0; i < t.numel(); ++i) ASSERT_EQ(t.data()[i], y.full_weights.at(name).data()[i]) << name;
}

// Both objectives, in fp32 and (where the CPU has it) bf16, at batch 4 (one part) and at batch 32 (two
// batch-parallel parts); the resumed half runs on one thread where the others ran on two, since results do not
// depend on the thread count.
TEST_F(TrainerTest, ResumeContinuesBitForBit) {
  std::vector<std::string> precisions{"fp32"};
  if (bf16_supported()) precisions.push_back("bf16");
  for (const std::string& precision : precisions)
  for (int batch : {4, 32})
  for (const char* objective : {"lcd", "diffusion"}) {
    const std::string tag = std::string(objective) + "-" + precision + "-" + std::to_string(batch);
    SCOPED_TRACE(tag);
    const std::string a = "straight-" + tag, b = "resumed-" + tag;
    auto cfg = [&](const std::string& run, int steps, int threads) {
      nlohmann::json c = config(run, steps, objective);
      c["train"]["precision"] = precision;
      c["train"]["batch_size"] = batch;
      c["threads"] = threads;
      return parse_train_config(c, run);
    };
    Trainer(cfg(a, 6, 2), "").run();
    EXPECT_EQ(Trainer(cfg(b, 4, 2), "").run(), 4);
    // Resume at the checkpoint of step 4 (written at the end) and go on to 6.
    EXPECT_EQ(Trainer(cfg(b, 6, 1), (dir_ / b).string()).run(), 6);
    EXPECT_EQ(logged_metrics(dir_ / a), logged_metrics(dir_ / b));
    EXPECT_EQ(logged_metrics(dir_ / a).size(), 6u);
    expect_same_adapter((dir_ / a / "adapter/pytorch_lora_weights.safetensors").string(),
                        (dir_ / b / "adapter/pytorch_lora_weights.safetensors").string());
    if (std::string(objective) == "lcd")
      expect_same_adapter((dir_ / a / "adapter_ema/adapter.h5").string(), (dir_ / b / "adapter_ema/adapter.h5").string());
    for (const char* f : {"adapter_kohya.safetensors", "adapter.h5", "adapter_config.json"})
      EXPECT_TRUE(fs::exists(dir_ / a / "adapter" / f)) << f;
  }
  EXPECT_TRUE(fs::exists(dir_ / "straight-lcd-fp32-4/samples/final-lcm1.png"));
  EXPECT_TRUE(fs::exists(dir_ / "straight-diffusion-fp32-4/samples/final-ddim2.png"));
}

// Every objective of the table (and each Ψ) trains end to end on the tiny model, writes its grids and adapters,
// and resumes bit for bit. LCF starts from the adapter of a short LCD run.
TEST_F(TrainerTest, EveryMethodTrainsAndResumesBitForBit) {
  Trainer(parse_train_config(config("lcd-init", 2), "init"), "").run();
  const std::string init = (dir_ / "lcd-init/adapter/pytorch_lora_weights.safetensors").string();
  struct Method {
    std::string tag;
    nlohmann::json overrides;
    std::string grid;  // a grid the run must write
  };
  const std::vector<Method> methods = {
      {"dpm-solver-2", {{"lcd", {{"solver", "dpm-solver-2"}}}}, "final-lcm1.png"},
      {"dpm-solver++2s", {{"lcd", {{"solver", "dpm-solver++2s"}}}}, "final-lcm1.png"},
      {"pcm", {{"objective", "pcm"}, {"pcm", {{"phases", 2}}}, {"lcd", {{"cond_dropout", 0.25}}}}, "final-pcm2.png"},
      {"lcf", {{"objective", "lcf"}, {"lora", {{"init_adapter", init}}}}, "final-lcm1.png"},
      {"w-conditioned", {{"lcd", {{"guidance_embedding", true}, {"guidance_embedding_dim", 16}}}}, "final-lcm1.png"},
  };
  for (const Method& m : methods) {
    SCOPED_TRACE(m.tag);
    auto cfg = [&](const std::string& run, int steps) {
      nlohmann::json c = config(run, steps);
      c.merge_patch(m.overrides);
      c["lora"]["rank"] = 2;
      return parse_train_config(c, run);
    };
    const std::string a = "straight-" + m.tag, b = "resumed-" + m.tag;
    Trainer(cfg(a, 6), "").run();
    Trainer(cfg(b, 4), "").run();
    EXPECT_EQ(Trainer(cfg(b, 6), (dir_ / b).string()).run(), 6);
    EXPECT_EQ(logged_metrics(dir_ / a), logged_metrics(dir_ / b));
    expect_same_adapter((dir_ / a / "adapter/adapter.h5").string(), (dir_ / b / "adapter/adapter.h5").string());
    expect_same_adapter((dir_ / a / "adapter_ema/adapter.h5").string(), (dir_ / b / "adapter_ema/adapter.h5").string());
    EXPECT_TRUE(fs::exists(dir_ / a / "samples" / m.grid)) << m.grid;
    // The last checkpoint's adapters, exported by lcd-train, are the run's final ones.
    for (const char* which : {"", " --ema"}) {
      const std::string out = (dir_ / a / (std::string("export") + (which[0] ? "-ema" : "") + ".h5")).string();
      const CmdResult r = run_tool("lcd-train", "--export-checkpoint " + (dir_ / a / "checkpoints/checkpoint-000006.h5").string() +
                                                    " --out " + out + which);
      ASSERT_EQ(r.status, 0) << r.output;
      expect_same_adapter(out, (dir_ / a / (which[0] ? "adapter_ema" : "adapter") / "adapter.h5").string());
    }
    const LoraAdapter trained = read_lora((dir_ / a / "adapter/pytorch_lora_weights.safetensors").string());
    EXPECT_EQ(trained.metadata.at("lcdkit.objective"), cfg(a, 6).objective);
    if (m.tag == "pcm") {
      EXPECT_EQ(trained.metadata.at("lcdkit.pcm_phases"), "2");
    }
    if (m.tag == "w-conditioned") {  // cond_proj trained from zero and exported with the factors, in every format
      for (const char* f : {"adapter/pytorch_lora_weights.safetensors", "adapter/adapter_kohya.safetensors", "adapter/adapter.h5"}) {
        const LoraAdapter exported = read_lora((dir_ / a / f).string());
        ASSERT_EQ(exported.full_weights.count("time_embedding.cond_proj.weight"), 1u) << f;
        const Tensor& p = exported.full_weights.at("time_embedding.cond_proj.weight");
        EXPECT_EQ(p.shape(), (Shape{8, 16}));
        double norm = 0;
        for (int64_t i = 0; i < p.numel(); ++i) norm += std::abs(p.data()[i]);
        EXPECT_GT(norm, 0.0) << f;
      }
      // lcm-sample gives the plain teacher the projection and feeds --guidance's w = s − 1: scales differ.
      auto sample = [&](const std::string& s) {
        const std::string out = (dir_ / a / ("lat-" + s + ".safetensors")).string();
        const CmdResult r = run_tool("lcm-sample", "--model " + model_ + " --lora " + (dir_ / a / "adapter/adapter.h5").string() +
                                                       " --labels 0,1 --steps 2 --guidance " + s + " --latents-out " + out);
        EXPECT_EQ(r.status, 0) << r.output;
        return SafetensorsFile::read(out).tensor("latents");
      };
      const Tensor low = sample("1.5"), high = sample("3");
      EXPECT_FALSE(std::equal(low.data(), low.data() + low.numel(), high.data()));
    } else {
      EXPECT_TRUE(trained.full_weights.empty());
    }
    if (m.tag == "lcf") {  // it moved away from the adapter it started from
      const LoraAdapter start = read_lora(init);
      double moved = 0;
      for (const auto& [name, f] : trained.modules)
        for (int64_t i = 0; i < f.up.numel(); ++i)
          moved = std::max(moved, double(std::abs(f.up.data()[i] - start.modules.at(name).up.data()[i])));
      EXPECT_GT(moved, 0.0);
    }
  }
}

// lcd.guidance_embedding_lr_scale: after one step from zero, AdamW moves each cond_proj weight by
// lr·scale·g/(|g| + ε), so the scaled run's projection is the plain run's times the factor, while the LoRA
// factors (whose step saw the same zero projection) come out bit for bit equal.
TEST_F(TrainerTest, GuidanceEmbeddingLearningRateScaleMovesOnlyTheProjection) {
  auto run = [&](const std::string& name, double scale) {
    nlohmann::json c = config(name, 1);
    c["lcd"]["guidance_embedding"] = true;
    c["lcd"]["guidance_embedding_dim"] = 16;
    c["lcd"]["guidance_embedding_lr_scale"] = scale;
    Trainer(parse_train_config(c, name), "").run();
    return read_lora((dir_ / name / "adapter/adapter.h5").string());
  };
  const LoraAdapter plain = run("lr-scale-1", 1.0), scaled = run("lr-scale-10", 10.0);
  const Tensor& p1 = plain.full_weights.at("time_embedding.cond_proj.weight");
  const Tensor& p10 = scaled.full_weights.at("time_embedding.cond_proj.weight");
  ASSERT_EQ(p1.shape(), p10.shape());
  double largest = 0;
  for (int64_t i = 0; i < p1.numel(); ++i) {
    EXPECT_NEAR(p10.data()[i], 10.0 * p1.data()[i], 1e-6 * std::abs(p10.data()[i]) + 1e-12) << i;
    largest = std::max(largest, double(std::abs(p1.data()[i])));
  }
  EXPECT_NEAR(largest, 1e-4, 1e-6);  // lr 1e-4: the first step moves each weight by about lr
  for (const auto& [name, f] : plain.modules) {
    const auto& g = scaled.modules.at(name);
    EXPECT_TRUE(std::equal(f.up.data(), f.up.data() + f.up.numel(), g.up.data())) << name;
    EXPECT_TRUE(std::equal(f.down.data(), f.down.data() + f.down.numel(), g.down.data())) << name;
  }
  nlohmann::json c = config("lr-scale-alone", 1);
  c["lcd"]["guidance_embedding_lr_scale"] = 10.0;
  EXPECT_THROW(parse_train_config(c, "lr-scale-alone"), ConfigError);
}

// The lcd-train binary with its progress piped (as into a log file): every line carries the time of day and the
// elapsed time, and the ETA is the time limit's when that comes first. The export folder is loaded by diffusers
// (pytorch_lora_weights.safetensors) and PEFT (adapter_model.safetensors + adapter_config.json), and the kohya
// file says what it holds.
TEST_F(TrainerTest, PipedProgressCarriesTheTimeAndTheEtaHonoursTheTimeLimit) {
  nlohmann::json c = config("timed", 100000);
  c["train"]["time_limit_minutes"] = 0.02;
  c["log"]["every"] = 1;
  c["checkpoint"]["every"] = 100000;
  const std::string path = (dir_ / "timed.json").string();
  std::ofstream(path) << c.dump(2);
  const CmdResult r = run_tool("lcd-train", path + " --threads 1");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_TRUE(std::regex_search(r.output, std::regex(R"(\n\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\] step 1/100000 \|.*\| \S+ elapsed \| ETA \S+ \(time limit, about step \d+\))")))
      << r.output;
  EXPECT_NE(r.output.find("time limit of 0.02 min reached"), std::string::npos) << r.output;
  // metrics.csv: the same steps and values as metrics.jsonl, one row each.
  std::ifstream jl(dir_ / "timed/metrics.jsonl"), csv(dir_ / "timed/metrics.csv");
  std::string header, row, line;
  ASSERT_TRUE(static_cast<bool>(std::getline(csv, header)));
  EXPECT_EQ(header, "step,loss,grad_norm,loss_huber,loss_l2,lr,step_time");
  int rows = 0;
  while (std::getline(jl, line)) {
    ASSERT_TRUE(static_cast<bool>(std::getline(csv, row))) << "metrics.csv has fewer rows than metrics.jsonl";
    const nlohmann::json j = nlohmann::json::parse(line);
    EXPECT_EQ(row.rfind(j.at("step").dump() + "," + j.at("loss").dump() + ",", 0), 0u) << row << " vs " << line;
    ++rows;
  }
  EXPECT_GT(rows, 0);
  EXPECT_FALSE(static_cast<bool>(std::getline(csv, row))) << "metrics.csv has more rows: " << row;
  const fs::path adapter = dir_ / "timed/adapter";
  for (const char* f : {"pytorch_lora_weights.safetensors", "adapter_model.safetensors", "adapter_config.json",
                        "adapter_kohya.safetensors", "adapter.h5"})
    EXPECT_TRUE(fs::exists(adapter / f)) << f;
  expect_same_adapter((adapter / "pytorch_lora_weights.safetensors").string(), adapter.string());
  const SafetensorsFile kohya = SafetensorsFile::read((adapter / "adapter_kohya.safetensors").string());
  EXPECT_EQ(kohya.metadata().at("ss_network_dim"), "2");
  EXPECT_EQ(kohya.metadata().at("ss_network_alpha"), "4");
  EXPECT_EQ(kohya.metadata().at("ss_base_model_version"), fs::path(model_).lexically_normal().filename().string());
}

TEST_F(TrainerTest, ResumeRefusesAChangedComputation) {
  Trainer(parse_train_config(config("r", 3), "a"), "").run();
  auto changed = config("r", 6);
  changed["lcd"]["huber_c"] = 0.01;
  try {
    Trainer(parse_train_config(changed, "b"), (dir_ / "r").string());
    FAIL();
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("lcd.huber_c"), std::string::npos) << e.what();
  }
  EXPECT_THROW(Trainer(parse_train_config(config("r", 6), "c"), ""), ConfigError) << "an existing run must not be overwritten";
}

TEST_F(TrainerTest, NanLossStopsWithAnEmergencyCheckpointAndKeepsTheLastGoodOne) {
  auto cfg = config("nan", 10);
  cfg["optim"] = {{"lr", 1e30}, {"max_grad_norm", 0.0}};
  cfg["checkpoint"]["every"] = 1;
  try {
    Trainer(parse_train_config(cfg, "nan"), "").run();
    FAIL() << "training went on through a NaN";
  } catch (const TrainingError& e) {
    const std::string m = e.what();
    EXPECT_TRUE(m.find("nan") != std::string::npos || m.find("inf") != std::string::npos) << m;
    EXPECT_NE(m.find("emergency"), std::string::npos) << m;
  }
  std::string emergency_path;
  for (const auto& e : fs::directory_iterator(dir_ / "nan/checkpoints"))
    if (e.path().filename().string().find("-emergency") != std::string::npos) emergency_path = e.path().string();
  ASSERT_FALSE(emergency_path.empty()) << "no emergency checkpoint";
  const TrainingState emergency = load_checkpoint(emergency_path);
  for (float v : emergency.params) ASSERT_TRUE(std::isfinite(v)) << "the emergency checkpoint must hold the last good weights";
  char regular[64];
  std::snprintf(regular, sizeof regular, "checkpoint-%06lld.h5", static_cast<long long>(emergency.step));
  EXPECT_TRUE(fs::exists(dir_ / "nan/checkpoints" / regular)) << "the last good regular checkpoint must remain";
}

TEST(TrainConfigTest, ErrorsNameTheKeyAndTheValue) {
  auto expect_error = [&](nlohmann::json user, const std::string& key) {
    user["model"] = std::string(LCDKIT_SOURCE_DIR) + "/models/fmnist-ldm-v1";
    user["data"]["path"] = "/";
    try {
      parse_train_config(user, "cfg.json");
      ADD_FAILURE() << "accepted: " << user.dump();
    } catch (const ConfigError& e) {
      EXPECT_NE(std::string(e.what()).find(key), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("cfg.json"), std::string::npos) << e.what();
    }
  };
  expect_error({{"lcd", {{"guidance_mn", 2}}}}, "lcd.guidance_mn");
  expect_error({{"lora", {{"rank", 0}}}}, "lora.rank");
  expect_error({{"lora", {{"rank", "16"}}}}, "lora.rank");
  expect_error({{"train", {{"batch_size", 0}}}}, "train.batch_size");
  expect_error({{"lcd", {{"num_ddim_timesteps", 30}}}}, "lcd.num_ddim_timesteps");
  expect_error({{"lcd", {{"guidance_min", 5}, {"guidance_max", 2}}}}, "lcd.guidance_max");
  expect_error({{"lcd", {{"loss", "l1"}}}}, "lcd.loss");
  expect_error({{"optim", {{"schedule", "linear"}}}}, "optim.schedule");
  expect_error({{"lora", {{"init_adapter", "/nonexistent.safetensors"}}}}, "lora.init_adapter");
  expect_error({{"objective", "gan"}}, "objective");
  expect_error({{"data", {{"style", "sepia"}}}}, "data.style");
  expect_error({{"lcd", {{"solver", "euler"}}}}, "lcd.solver");
  expect_error({{"objective", "pcm"}, {"pcm", {{"phases", 0}}}}, "pcm.phases");
  expect_error({{"objective", "pcm"}, {"pcm", {{"phases", 60}}}}, "pcm.phases");
  expect_error({{"objective", "lcf"}}, "lora.init_adapter");
  expect_error({{"objective", "pcm"}, {"lora", {{"enabled", false}}}}, "lora.enabled");
  expect_error({{"lcd", {{"cond_dropout", 1.5}}}}, "lcd.cond_dropout");
  expect_error({{"lcd", {{"top_step_fraction", -0.1}}}}, "lcd.top_step_fraction");
  nlohmann::json bad_model = {{"model", "/nonexistent"}};
  try {
    parse_train_config(bad_model, "cfg.json");
    FAIL();
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("\"model\""), std::string::npos) << e.what();
  }
}

// Every key of the table has a meaning in --help-config, every leaf of the resolved defaults is a key of the
// table, and the objectives named in the doc of "objective" are the table's.
// lcd-train --print-config: a file lcd-train reads as it is, with every key at its default under its comment.
TEST(TrainConfigTest, PrintConfigIsACommentedDefaultConfigThatLoads) {
  const CmdResult r = run_tool("lcd-train", "--print-config");
  ASSERT_EQ(r.status, 0) << r.output;
  const fs::path path = fs::temp_directory_path() / ("lcdkit_printed_" + std::to_string(::getpid()) + ".json");
  // The default model path is relative to the repository; the test runs elsewhere.
  const std::string model = std::string(LCDKIT_SOURCE_DIR) + "/models/fmnist-ldm-v1";
  std::string text = r.output;
  const std::string dflt = "\"model\": \"models/fmnist-ldm-v1\"";
  ASSERT_NE(text.find(dflt), std::string::npos);
  text.replace(text.find(dflt), dflt.size(), "\"model\": \"" + model + "\"");
  std::ofstream(path) << text;
  const TrainConfig c = load_train_config(path.string());
  EXPECT_EQ(c.resolved, parse_train_config(nlohmann::json{{"model", model}}, "defaults").resolved);
  for (const std::string& key : config_key_names()) {
    const std::string leaf = "\"" + key.substr(key.rfind('.') + 1) + "\": ";
    const size_t at = r.output.find(leaf);
    ASSERT_NE(at, std::string::npos) << key;
    const size_t line_start = r.output.rfind('\n', at);
    const size_t prev_start = r.output.rfind('\n', line_start - 1);
    EXPECT_NE(r.output.substr(prev_start, line_start - prev_start).find("// "), std::string::npos) << key << " has no comment above it";
  }
  fs::remove(path);
}

TEST(TrainConfigTest, EveryKeyIsDocumented) {
  const std::string help = describe_config();
  const std::vector<std::string> keys = config_key_names();
  std::set<std::string> table(keys.begin(), keys.end());
  EXPECT_EQ(table.size(), keys.size()) << "a key appears twice";
  std::istringstream lines(help);
  std::map<std::string, std::string> doc;  // key → its meaning (the line after "  key = default")
  for (std::string line, key; std::getline(lines, line);) {
    if (line.rfind("      ", 0) == 0) doc[key] = line.substr(6);
    else if (line.rfind("  ", 0) == 0) key = line.substr(2, line.find(" = ") - 2);
  }
  for (const std::string& k : keys) EXPECT_GT(doc[k].size(), 4u) << k << " has no meaning in --help-config";
  nlohmann::json user = {{"model", std::string(LCDKIT_SOURCE_DIR) + "/models/fmnist-ldm-v1"}, {"data", {{"path", "/"}}}};
  const nlohmann::json resolved = parse_train_config(user, "cfg.json").resolved.flatten();
  for (auto it = resolved.begin(); it != resolved.end(); ++it) {
    std::string key = it.key().substr(1);
    const std::string last = key.substr(key.rfind('/') + 1);
    if (last.find_first_not_of("0123456789") == std::string::npos) key = key.substr(0, key.rfind('/'));  // a list element
    std::replace(key.begin(), key.end(), '/', '.');
    EXPECT_TRUE(table.count(key)) << key << " is resolved but not in the table";
  }
  for (const char* objective : {"lcd", "pcm", "lcf", "diffusion"})
    EXPECT_NE(doc["objective"].find(std::string("\"") + objective + "\""), std::string::npos) << objective;
}

}  // namespace
}  // namespace lcd::testing
