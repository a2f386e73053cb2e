// Adapter files as the diffusers / PEFT / kohya world writes and reads them (issue 17): the PEFT folder that
// PeftModel.from_pretrained loads, kohya metadata recomputed for what a file holds, synthetic Stable Diffusion
// 1.5 and SDXL adapters with their real module key sets (generated below from the models' block layouts, as
// the converters' key tables list them) carried through convert bit for bit, text-encoder modules, and the
// module kinds lcdkit refuses by name (LyCORIS, DoRA, SGM block names).
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "autograd/errors.h"
#include "autograd/random.h"
#include "infer/io/lora_io.h"
#include "infer/io/model_io.h"
#include "infer/tools/version.h"
#include "datasets/png.h"
#include "tests/infer/golden.h"
#include "tests/tool_runner.h"

namespace lcd::testing {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

// ---- the synthetic corpus ----

// diffusers module names of the attention LoRA targets kohya's networks.lora trains in a Stable Diffusion UNet
// (Transformer2DModel's projections, attention and feed-forward layers), for blocks (component, index,
// attentions, transformer layers each).
struct AttentionBlock {
  std::string block;  // "down_blocks.1", "mid_block", "up_blocks.2"
  int attentions, layers;
};

std::vector<std::string> unet_attention_modules(const std::vector<AttentionBlock>& blocks) {
  std::vector<std::string> out;
  for (const auto& b : blocks)
    for (int a = 0; a < b.attentions; ++a) {
      const std::string at = b.block + ".attentions." + std::to_string(a);
      out.push_back(at + ".proj_in");
      out.push_back(at + ".proj_out");
      for (int t = 0; t < b.layers; ++t) {
        const std::string tb = at + ".transformer_blocks." + std::to_string(t);
        for (const char* attn : {"attn1", "attn2"})
          for (const char* p : {"to_q", "to_k", "to_v", "to_out.0"}) out.push_back(tb + "." + attn + "." + p);
        out.push_back(tb + ".ff.net.0.proj");
        out.push_back(tb + ".ff.net.2");
      }
    }
  return out;
}

// transformers' CLIPTextModel layers kohya trains: attention projections and the MLP of every encoder layer.
std::vector<std::string> clip_modules(const std::string& component, int layers) {
  std::vector<std::string> out;
  for (int l = 0; l < layers; ++l) {
    const std::string p = component + "text_model.encoder.layers." + std::to_string(l);
    for (const char* proj : {"q_proj", "k_proj", "v_proj", "out_proj"}) out.push_back(p + ".self_attn." + proj);
    out.push_back(p + ".mlp.fc1");
    out.push_back(p + ".mlp.fc2");
  }
  return out;
}

// SD 1.5: three attention down blocks and three up blocks (2 / 3 attentions of one layer), the mid block; one
// CLIP ViT-L text encoder of 12 layers.
std::vector<std::string> sd15_modules() {
  std::vector<std::string> m = unet_attention_modules({{"down_blocks.0", 2, 1}, {"down_blocks.1", 2, 1}, {"down_blocks.2", 2, 1},
                                                       {"mid_block", 1, 1}, {"up_blocks.1", 3, 1}, {"up_blocks.2", 3, 1},
                                                       {"up_blocks.3", 3, 1}});
  for (const auto& t : clip_modules("text_encoder.", 12)) m.push_back(t);
  return m;
}

// SDXL base: attention in down blocks 1 (2 layers) and 2 (10 layers), the mid block (10), up blocks 0 (10) and
// 1 (2); CLIP ViT-L (12 layers) and OpenCLIP ViT-bigG (32 layers).
std::vector<std::string> sdxl_modules() {
  std::vector<std::string> m = unet_attention_modules({{"down_blocks.1", 2, 2}, {"down_blocks.2", 2, 10}, {"mid_block", 1, 10},
                                                       {"up_blocks.0", 3, 10}, {"up_blocks.1", 3, 2}});
  for (const auto& t : clip_modules("text_encoder.", 12)) m.push_back(t);
  for (const auto& t : clip_modules("text_encoder_2.", 32)) m.push_back(t);
  return m;
}

// Tiny factors (rank 2 of 3×5 matrices: key sets matter here, not sizes), random values, alpha varying by module.
LoraAdapter synthetic(const std::vector<std::string>& modules, uint64_t seed) {
  Rng gen(seed);
  LoraAdapter a;
  int i = 0;
  for (const auto& m : modules) {
    Tensor down = Tensor::empty({2, 5}), up = Tensor::empty({3, 2});
    for (Tensor* t : {&down, &up})
      for (int64_t k = 0; k < t->numel(); ++k) t->data()[k] = static_cast<float>(gen.normal());
    a.modules[m] = LoraFactors{down, up, (i++ % 3) ? 2.0 : 1.0};
  }
  return a;
}

// The kohya key a module is written under, as kohya's sd-scripts name it.
std::string kohya_key(const std::string& module, bool sdxl) {
  std::string prefix = "lora_unet_", rest = module;
  if (module.rfind("text_encoder_2.", 0) == 0) {
    prefix = "lora_te2_";
    rest = module.substr(15);
  } else if (module.rfind("text_encoder.", 0) == 0) {
    prefix = sdxl ? "lora_te1_" : "lora_te_";
    rest = module.substr(13);
  }
  std::replace(rest.begin(), rest.end(), '.', '_');
  return prefix + rest;
}

void expect_same_factors(const LoraAdapter& want, const LoraAdapter& got, const std::string& what) {
  ASSERT_EQ(want.modules.size(), got.modules.size()) << what;
  for (const auto& [name, f] : want.modules) {
    auto it = got.modules.find(name);
    ASSERT_NE(it, got.modules.end()) << what << ": " << name;
    const LoraFactors& g = it->second;
    EXPECT_EQ(f.alpha, g.alpha) << what << ": " << name;
    ASSERT_EQ(f.down.shape(), g.down.shape()) << name;
    ASSERT_EQ(f.up.shape(), g.up.shape()) << name;
    EXPECT_EQ(0, std::memcmp(f.down.data(), g.down.data(), sizeof(float) * f.down.numel())) << what << ": " << name;
    EXPECT_EQ(0, std::memcmp(f.up.data(), g.up.data(), sizeof(float) * f.up.numel())) << what << ": " << name;
  }
}

std::set<std::string> keys_of(const std::string& path) {
  const std::vector<std::string> names = SafetensorsFile::read(path).names();
  return std::set<std::string>(names.begin(), names.end());
}

class AdapterFormats : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("lcdkit_formats_" + std::to_string(::getpid()));
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string path(const std::string& n) const { return (dir_ / n).string(); }
  fs::path dir_;
};

// ---- PEFT ----

TEST_F(AdapterFormats, ThePeftFolderHasTheFilesKeysAndConfigFieldsPeftReads) {
  LoraAdapter a = synthetic(unet_attention_modules({{"down_blocks.0", 1, 1}}), 1);
  for (auto& [m, f] : a.modules) f.alpha = 2.0;
  a.modules.begin()->second.alpha = 8.0;  // one module differs: alpha_pattern
  a.metadata["lcdkit.base_model"] = "models/fmnist-ldm-v1";
  write_lora(path("peft"), a, LoraFormat::kPeft);
  // PeftModel.from_pretrained(model, folder): adapter_config.json (LoraConfig.from_pretrained) and
  // adapter_model.safetensors (SAFETENSORS_WEIGHTS_NAME), keys as get_peft_model_state_dict saves them.
  ASSERT_TRUE(fs::exists(path("peft/adapter_model.safetensors")));
  ASSERT_TRUE(fs::exists(path("peft/adapter_config.json")));
  std::set<std::string> want;
  for (const auto& [m, f] : a.modules)
    for (const char* s : {".lora_A.weight", ".lora_B.weight"}) want.insert("base_model.model." + m + s);
  EXPECT_EQ(keys_of(path("peft/adapter_model.safetensors")), want);
  std::ifstream in(path("peft/adapter_config.json"));
  const json c = json::parse(in);
  EXPECT_EQ(c.at("peft_type"), "LORA");
  EXPECT_EQ(c.at("r"), 2);
  EXPECT_EQ(c.at("lora_alpha"), 2.0);
  EXPECT_EQ(c.at("alpha_pattern").size(), 1u);
  EXPECT_EQ(c.at("alpha_pattern").at(a.modules.begin()->first), 8.0);
  EXPECT_EQ(c.at("base_model_name_or_path"), "models/fmnist-ldm-v1");
  EXPECT_TRUE(c.at("task_type").is_null());
  EXPECT_EQ(c.at("bias"), "none");
  EXPECT_EQ(c.at("lora_dropout"), 0.0);
  EXPECT_EQ(c.at("fan_in_fan_out"), false);
  EXPECT_EQ(c.at("use_dora"), false);
  EXPECT_EQ(c.at("use_rslora"), false);
  EXPECT_TRUE(c.at("rank_pattern").empty());
  EXPECT_TRUE(c.at("modules_to_save").is_null());
  const std::vector<std::string> targets = c.at("target_modules");
  EXPECT_EQ(std::set<std::string>(targets.begin(), targets.end()),
            (std::set<std::string>{"ff.net.0.proj", "ff.net.2", "proj_in", "proj_out", "to_k", "to_out.0", "to_q", "to_v"}));
  // lcdkit reads the folder back (given as the folder or as its file) to the same factors and alphas.
  expect_same_factors(a, read_lora(path("peft")), "PEFT folder");
  expect_same_factors(a, read_lora(path("peft/adapter_model.safetensors")), "PEFT file");
  EXPECT_EQ(read_lora(path("peft")).source_style, "peft");
}

TEST_F(AdapterFormats, APeftFolderRefusesTextEncoderModulesAndConvertRefusesAFileName) {
  const LoraAdapter a = synthetic(sd15_modules(), 2);
  EXPECT_THROW(write_lora(path("peft"), a, LoraFormat::kPeft), FormatError);
  write_lora(path("a.safetensors"), a, LoraFormat::kDiffusers);
  const CmdResult r = run_tool("lora-merge", "convert " + path("a.safetensors") + " " + path("b.safetensors") + " --format peft");
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_NE(r.output.find("writes a folder"), std::string::npos) << r.output;
  EXPECT_FALSE(fs::exists(path("b.safetensors")));
}

// ---- kohya metadata ----

TEST_F(AdapterFormats, KohyaMetadataDescribesTheCombinedFileNotItsInputs) {
  LoraAdapter a = synthetic(unet_attention_modules({{"down_blocks.0", 1, 1}}), 3);
  for (auto& [m, f] : a.modules) f.alpha = 2.0;
  a.metadata["ss_network_dim"] = "999";  // stale values an input might carry
  a.metadata["modelspec.title"] = "stale";
  a.metadata["ss_base_model_version"] = "sd_v1";
  write_lora(path("a.safetensors"), a, LoraFormat::kKohya);
  const SafetensorsFile one = SafetensorsFile::read(path("a.safetensors"));
  EXPECT_EQ(one.metadata().at("ss_network_dim"), "2");
  EXPECT_EQ(one.metadata().at("ss_network_alpha"), "2");
  EXPECT_EQ(one.metadata().at("ss_network_module"), "networks.lora");
  EXPECT_EQ(one.metadata().at("ss_base_model_version"), "sd_v1");
  EXPECT_EQ(one.metadata().at("modelspec.architecture"), "stable-diffusion-v1/lora");
  EXPECT_EQ(one.metadata().at("modelspec.title"), "a");
  EXPECT_EQ(one.metadata().at("modelspec.sai_model_spec"), "1.0.0");
  const CmdResult r = run_tool("lora-merge", "combine " + path("sum.safetensors") + " " + path("a.safetensors") + " " +
                                                 path("a.safetensors") + ":0.5");
  ASSERT_EQ(r.status, 0) << r.output;
  const SafetensorsFile sum = SafetensorsFile::read(path("sum.safetensors"));
  EXPECT_EQ(sum.metadata().at("ss_network_dim"), "4");  // cat of two rank-2 adapters
  EXPECT_EQ(sum.metadata().at("modelspec.title"), "sum");
  EXPECT_EQ(sum.metadata().at("ss_base_model_version"), "sd_v1");
  // A diffusers file carries none of kohya's keys.
  ASSERT_EQ(run_tool("lora-merge", "convert " + path("sum.safetensors") + " " + path("d.safetensors") + " --format diffusers").status, 0);
  const SafetensorsFile d = SafetensorsFile::read(path("d.safetensors"));
  for (const auto& [k, v] : d.metadata())
    EXPECT_TRUE(k.rfind("ss_", 0) != 0 && k.rfind("modelspec.", 0) != 0) << k;
}

// ---- Stable Diffusion key sets ----

TEST_F(AdapterFormats, Sd15KohyaFilesRoundTripThroughConvertBitForBit) {
  const std::vector<std::string> modules = sd15_modules();
  ASSERT_EQ(modules.size(), 192u + 72u);  // kohya's SD1.5 LoRA: 192 UNet and 72 text-encoder modules
  const LoraAdapter a = synthetic(modules, 4);
  write_lora(path("sd15.safetensors"), a, LoraFormat::kKohya);
  std::set<std::string> want;
  for (const auto& m : modules)
    for (const char* s : {".lora_down.weight", ".lora_up.weight", ".alpha"}) want.insert(kohya_key(m, false) + s);
  const std::set<std::string> written = keys_of(path("sd15.safetensors"));
  EXPECT_EQ(written, want);
  // kohya → diffusers → HDF5 → kohya: the same keys and every tensor bit for bit.
  ASSERT_EQ(run_tool("lora-merge", "convert " + path("sd15.safetensors") + " " + path("d.safetensors") + " --format diffusers").status, 0);
  EXPECT_TRUE(keys_of(path("d.safetensors")).count("text_encoder.text_model.encoder.layers.11.mlp.fc2.lora_A.weight"));
  ASSERT_EQ(run_tool("lora-merge", "convert " + path("d.safetensors") + " " + path("h.h5") + " --format hdf5").status, 0);
  ASSERT_EQ(run_tool("lora-merge", "convert " + path("h.h5") + " " + path("back.safetensors") + " --format kohya").status, 0);
  EXPECT_EQ(keys_of(path("back.safetensors")), written);
  expect_same_factors(a, read_lora(path("d.safetensors")), "diffusers");
  expect_same_factors(a, read_lora(path("back.safetensors")), "kohya again");
  const CmdResult i = run_tool("lora-merge", "inspect " + path("back.safetensors"));
  ASSERT_EQ(i.status, 0) << i.output;
  EXPECT_NE(i.output.find("264 modules"), std::string::npos) << i.output;
  EXPECT_NE(i.output.find("72 of them text-encoder"), std::string::npos) << i.output;
}

TEST_F(AdapterFormats, SdxlFilesRoundTripWithBothTextEncodersBitForBit) {
  const std::vector<std::string> modules = sdxl_modules();
  ASSERT_EQ(modules.size(), 722u + 72u + 192u);  // UNet attention, CLIP ViT-L, OpenCLIP ViT-bigG
  const LoraAdapter a = synthetic(modules, 5);
  write_lora(path("sdxl.safetensors"), a, LoraFormat::kDiffusers);
  ASSERT_EQ(run_tool("lora-merge", "convert " + path("sdxl.safetensors") + " " + path("k.safetensors") + " --format kohya").status, 0);
  std::set<std::string> want;
  for (const auto& m : modules)
    for (const char* s : {".lora_down.weight", ".lora_up.weight", ".alpha"}) want.insert(kohya_key(m, true) + s);
  EXPECT_EQ(keys_of(path("k.safetensors")), want);  // lora_te1_ / lora_te2_, as kohya's SDXL files
  ASSERT_EQ(run_tool("lora-merge", "convert " + path("k.safetensors") + " " + path("back.safetensors") + " --format diffusers").status, 0);
  EXPECT_EQ(keys_of(path("back.safetensors")), keys_of(path("sdxl.safetensors")));
  expect_same_factors(a, read_lora(path("k.safetensors")), "kohya");
  expect_same_factors(a, read_lora(path("back.safetensors")), "diffusers again");
  // combine needs no UNet for text-encoder modules: a·1 + a·(−1) has every module at twice the rank.
  ASSERT_EQ(run_tool("lora-merge", "combine " + path("c.safetensors") + " " + path("k.safetensors") + " " +
                                       path("back.safetensors") + ":-1").status, 0);
  const LoraAdapter c = read_lora(path("c.safetensors"));
  EXPECT_EQ(c.modules.size(), modules.size());
  EXPECT_EQ(c.modules.at("text_encoder_2.text_model.encoder.layers.31.mlp.fc2").rank(), 4);
}

TEST_F(AdapterFormats, SgmBlockNamesAreRefusedByNameEvenWhenUnmatchedKeysMayBeSkipped) {
  // kohya's SDXL files name UNet blocks as the original model does (input_blocks.4.1 = down_blocks.1.attentions.0).
  write_safetensors(path("sgm.safetensors"),
                    {{"lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q.lora_down.weight", Tensor::zeros({2, 5})},
                     {"lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q.lora_up.weight", Tensor::zeros({3, 2})}});
  for (const char* flags : {"", " --allow-unmatched"}) {
    const CmdResult r = run_tool("lora-merge", "convert " + path("sgm.safetensors") + " " + path("o.safetensors") +
                                                   " --format diffusers" + flags);
    EXPECT_EQ(r.status, 1) << r.output;
    EXPECT_NE(r.output.find("lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q.lora_down.weight"), std::string::npos) << r.output;
    EXPECT_NE(r.output.find("SGM"), std::string::npos) << r.output;
    EXPECT_FALSE(fs::exists(path("o.safetensors")));
  }
}

TEST_F(AdapterFormats, LycorisAndDoraModulesAreRefusedWholeByName) {
  const std::string m = "lora_unet_down_blocks_0_attentions_0_proj_in";
  const std::vector<std::pair<std::string, std::string>> cases = {
      {m + ".lora_mid.weight", "lora_mid"}, {m + ".hada_w1_a", "LoHa"},     {m + ".lokr_w1", "LoKr"},
      {m + ".dora_scale", "DoRA"},          {"base_model.model.down_blocks.0.attentions.0.proj_in.lora_magnitude_vector", "DoRA"},
  };
  for (const auto& [key, kind] : cases) {
    // A plain-LoRA pair for the module plus the extra tensor: reading the pair alone would be another ΔW.
    write_safetensors(path("x.safetensors"), {{m + ".lora_down.weight", Tensor::zeros({2, 5})},
                                              {m + ".lora_up.weight", Tensor::zeros({3, 2})},
                                              {key, Tensor::zeros({2, 2})}});
    for (bool allow : {false, true}) {
      try {
        read_lora(path("x.safetensors"), allow);
        ADD_FAILURE() << key << " was read";
      } catch (const FormatError& e) {
        EXPECT_NE(std::string(e.what()).find(key), std::string::npos) << e.what();
        EXPECT_NE(std::string(e.what()).find(kind), std::string::npos) << e.what();
      }
    }
  }
}

TEST_F(AdapterFormats, FoldSkipsTextEncoderModulesWithOneLineAndAppliesTheUnetPart) {
  if (!golden_available()) GTEST_SKIP() << "shared/golden not found";
  // The golden UNet adapter plus the text-encoder modules of an SD1.5 file.
  LoraAdapter a = read_lora(golden_dir("diffusers-A/lora_peft.safetensors"));
  for (const auto& [name, f] : synthetic(clip_modules("text_encoder.", 2), 6).modules) a.modules[name] = f;
  write_lora(path("with_te.safetensors"), a, LoraFormat::kKohya);
  const std::string unet = golden_dir("diffusers-A/unet");
  const CmdResult with = run_tool("lora-merge", "fold --unet " + unet + " --out " + path("f1") + " " + path("with_te.safetensors"));
  ASSERT_EQ(with.status, 0) << with.output;
  EXPECT_NE(with.output.find("12 text-encoder module(s) not applied"), std::string::npos) << with.output;
  write_lora(path("unet_only.safetensors"), read_lora(golden_dir("diffusers-A/lora_peft.safetensors")), LoraFormat::kKohya);
  ASSERT_EQ(run_tool("lora-merge", "fold --unet " + unet + " --out " + path("f2") + " " + path("unet_only.safetensors")).status, 0);
  const SafetensorsFile x = SafetensorsFile::read(path("f1/diffusion_pytorch_model.safetensors")),
                        y = SafetensorsFile::read(path("f2/diffusion_pytorch_model.safetensors"));
  ASSERT_EQ(x.names(), y.names());
  for (const auto& name : x.names()) {
    const Tensor p = x.tensor(name), q = y.tensor(name);
    ASSERT_EQ(p.shape(), q.shape()) << name;
    EXPECT_EQ(0, std::memcmp(p.data(), q.data(), sizeof(float) * p.numel())) << name;
  }
}

// ---- conventions ----

TEST(ToolConventions, EveryToolPrintsItsVersionAndCommit) {
  for (const char* tool : {"lcm-sample", "lora-merge", "lcd-train"}) {
    const CmdResult r = run_tool(tool, "--version");
    EXPECT_EQ(r.status, 0) << tool << ": " << r.output;
    EXPECT_EQ(r.output.rfind(std::string(tool) + " " + lcdkit_version() + " (", 0), 0u) << r.output;
  }
  const CmdResult sub = run_tool("lora-merge", "inspect --version");
  EXPECT_EQ(sub.status, 0) << sub.output;
}

TEST(ToolConventions, EveryLoraMergeCommandTakesOutAsAnOption) {
  const fs::path dir = fs::temp_directory_path() / ("lcdkit_out_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  const std::string a = (dir / "a.safetensors").string();
  write_lora(a, synthetic(unet_attention_modules({{"down_blocks.0", 1, 1}}), 9), LoraFormat::kKohya);
  auto bytes = [](const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
  };
  ASSERT_EQ(run_tool("lora-merge", "combine " + (dir / "p.safetensors").string() + " " + a + " " + a + ":0.5").status, 0);
  ASSERT_EQ(run_tool("lora-merge", "combine --out " + (dir / "o.safetensors").string() + " " + a + " " + a + ":0.5").status, 0);
  // The same bytes but for the title, which is the output's name.
  EXPECT_EQ(read_lora((dir / "p.safetensors").string()).modules.size(), read_lora((dir / "o.safetensors").string()).modules.size());
  ASSERT_EQ(run_tool("lora-merge", "convert " + a + " " + (dir / "c1.h5").string() + " --format hdf5").status, 0);
  ASSERT_EQ(run_tool("lora-merge", "convert " + a + " --out " + (dir / "c2.h5").string() + " --format hdf5").status, 0);
  EXPECT_EQ(bytes(dir / "c1.h5"), bytes(dir / "c2.h5"));
  const CmdResult two = run_tool("lora-merge", "convert " + a + " " + (dir / "c3.h5").string() + " --out " +
                                                   (dir / "c4.h5").string() + " --format hdf5");
  EXPECT_EQ(two.status, 2) << two.output;  // two outputs
  fs::remove_all(dir);
}

TEST(ToolConventions, DoubleDashEndsTheOptions) {
  // After "--" a file name that starts with "--" is a file: inspect then reports it missing, not an unknown option.
  const CmdResult r = run_tool("lora-merge", "inspect -- --no-such-adapter.safetensors");
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_NE(r.output.find("--no-such-adapter.safetensors"), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("unknown option"), std::string::npos) << r.output;
  const CmdResult without = run_tool("lora-merge", "inspect --no-such-adapter.safetensors");
  EXPECT_EQ(without.status, 2) << without.output;
  EXPECT_NE(without.output.find("unknown option"), std::string::npos) << without.output;
}

}  // namespace
}  // namespace lcd::testing

namespace lcd::testing {
namespace {

// lcm-sample on the shipped teacher: class names from its labels.json, and what made each image in its PNG
// text chunks (A1111's `parameters`, lcdkit's JSON), read back with the PNG reader.
TEST(SampleImages, ClassNamesSelectRowsAndEveryPngSaysWhatMadeIt) {
  const fs::path dir = fs::temp_directory_path() / ("lcdkit_pngtext_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  const std::string model = std::string(LCDKIT_SOURCE_DIR) + "/models/fmnist-ldm-v1";
  const CmdResult r = run_tool("lcm-sample", "--model " + model + " --labels Dress,ankle_boot,1 --steps 1 --seed 7 --threads 1 "
                                             "--precision fp32 --out " + (dir / "grid.png").string() + " --out-dir " + (dir / "each").string());
  ASSERT_EQ(r.status, 0) << r.output;
  const Image8 one = read_png((dir / "each/9_1.png").string(), 1);  // the second sample: "ankle_boot" is row 9
  std::map<std::string, std::string> text(one.text.begin(), one.text.end());
  ASSERT_TRUE(text.count("parameters")) << "no parameters chunk";
  const std::string& p = text["parameters"];
  EXPECT_EQ(p.rfind("Ankle boot (label 9)\nSteps: 1, Sampler: lcm, CFG scale: 1.0, Seed: 7, Sample index: 1, Size: 32x32, "
                    "Model: fmnist-ldm-v1, Version: lcdkit ", 0), 0u) << p;
  const json j = json::parse(text.at("lcdkit"));
  EXPECT_EQ(j.at("seed"), 7);
  EXPECT_EQ(j.at("steps"), 1);
  EXPECT_EQ(j.at("samples").size(), 1u);
  EXPECT_EQ(j.at("samples")[0].at("label"), 9);
  const Image8 grid = read_png((dir / "grid.png").string(), 1);
  std::map<std::string, std::string> gt(grid.text.begin(), grid.text.end());
  EXPECT_EQ(gt.at("parameters").rfind("Dress (label 3); Ankle boot (label 9); Trouser (label 1)\n", 0), 0u) << gt.at("parameters");
  EXPECT_EQ(json::parse(gt.at("lcdkit")).at("samples").size(), 3u);
  // An unknown name is refused with the model's names listed.
  const CmdResult bad = run_tool("lcm-sample", "--model " + model + " --labels Hat --out " + (dir / "x.png").string());
  EXPECT_EQ(bad.status, 2) << bad.output;
  EXPECT_NE(bad.output.find("\"Hat\" is not a class name of this model (T-shirt/top, Trouser"), std::string::npos) << bad.output;
  EXPECT_FALSE(fs::exists(dir / "x.png"));
  fs::remove_all(dir);
}

TEST(SampleImages, PngTextChunksRoundTripInAsciiAndUtf8) {
  const fs::path p = fs::temp_directory_path() / ("lcdkit_text_" + std::to_string(::getpid()) + ".png");
  Image8 img{3, 2, 1, std::vector<uint8_t>(6, 128), {{"parameters", "a\nSteps: 4"}, {"lcdkit", "{\"σ\": \"ε̂\"}"}}};
  write_png(p.string(), img);
  const Image8 back = read_png(p.string(), 1);
  EXPECT_EQ(back.text, img.text);
  EXPECT_EQ(back.pixels, img.pixels);
  fs::remove(p);
}

}  // namespace
}  // namespace lcd::testing
