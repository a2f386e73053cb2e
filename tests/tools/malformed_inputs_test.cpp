// The malformed-input corpus: about two hundred bad inputs, generated here (no stored blobs), against lcd-train,
// lcm-sample and lora-merge as subprocesses. Every case must end with exit status 1 or 2 (never 0, never a
// signal), print exactly one line, "<tool>: error: …", that names what is wrong and where (a file, key or flag
// the case lists), change no input (every input file is checksummed before and after) and leave no output
// (the case's output folder must not exist afterwards). Control cases run the same tools on good inputs and
// must succeed, so that the harness itself can fail.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "datasets/hdf5.h"
#include "datasets/latent_cache.h"
#include "infer/io/lora_io.h"
#include "infer/io/safetensors.h"
#include "tests/tool_runner.h"
#include "tests/train/tiny_model.h"
#include "train/checkpoint.h"

namespace lcd::testing {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

// ---- the workspace every case reads: a tiny model, images, a trained run and its adapters ----------------

fs::path g_root;  // <tmp>/lcdkit_corpus_<pid>
fs::path W() { return g_root / "in"; }

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}
void spit(const fs::path& p, const std::string& bytes) {
  fs::create_directories(p.parent_path());
  std::ofstream(p, std::ios::binary) << bytes;
}

// FNV-1a of every file (path and bytes) under `dir`.
std::map<std::string, uint64_t> checksums(const fs::path& dir) {
  std::map<std::string, uint64_t> out;
  if (!fs::exists(dir)) return out;
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    if (!e.is_regular_file()) continue;
    uint64_t h = 1469598103934665603ull;
    for (unsigned char ch : slurp(e.path())) h = (h ^ ch) * 1099511628211ull;
    out[fs::relative(e.path(), dir).string()] = h;
  }
  return out;
}

json train_config(const fs::path& out_dir) {
  return {{"model", (W() / "model").string()},
          {"output_dir", out_dir.string()},
          {"seed", 3},
          {"data", {{"source", "folder"}, {"path", (W() / "images").string()}, {"latent_cache", (W() / "lat.h5").string()}}},
          {"lora", {{"rank", 2}, {"alpha", 2}}},
          {"train", {{"steps", 2}, {"batch_size", 4}, {"precision", "fp32"}}},
          {"checkpoint", {{"every", 1}, {"keep", 5}}},
          {"samples", {{"every", 0}, {"labels", {0, 1}}, {"per_label", 1}, {"lcm_steps", {1}}}}};
}

class Corpus : public ::testing::Test {
 public:
  static void SetUpTestSuite() {
    g_root = fs::temp_directory_path() / ("lcdkit_corpus_" + std::to_string(::getpid()));
    fs::remove_all(g_root);
    write_tiny_model_and_images(W(), 4);
    spit(W() / "train.json", train_config(W() / "run").dump(2));
    const CmdResult r = run_tool("lcd-train", (W() / "train.json").string() + " --threads 2");
    ASSERT_EQ(r.status, 0) << r.output;
    for (const char* f : {"pytorch_lora_weights.safetensors", "adapter_kohya.safetensors", "adapter.h5"})
      fs::copy_file(W() / "run/adapter" / f, W() / f);
    Tensor cond = Tensor::full({2, 3, 8}, 0.5f), uncond = Tensor::full({1, 3, 8}, -0.5f);
    write_safetensors((W() / "cond.safetensors").string(), {{"cond", cond}, {"uncond", uncond}});
    write_safetensors((W() / "noise.safetensors").string(), {{"noise", Tensor::full({2, 2, 8, 8}, 0.3f)}});
  }
  static void TearDownTestSuite() { fs::remove_all(g_root); }
};

// ---- cases ------------------------------------------------------------------------------------------------

struct Case {
  std::string name, tool, args;                     // args: {W} workspace, {C} this case's inputs, {O} its outputs
  std::function<void(const fs::path& C)> setup;     // writes the case's malformed inputs into C
  std::vector<std::string> mentions;                // the error line names one of these
};

void PrintTo(const Case& c, std::ostream* os) { *os << c.name; }

std::string expand(std::string s, const fs::path& C, const fs::path& O) {
  for (auto [key, value] : {std::pair<std::string, std::string>{"{W}", W().string()}, {"{C}", C.string()}, {"{O}", O.string()}})
    for (size_t at; (at = s.find(key)) != std::string::npos;) s.replace(at, key.size(), value);
  return s;
}

// Safetensors bytes from a header (JSON text) and a data section.
std::string st_bytes(const std::string& header, const std::string& data) {
  std::string out(8, '\0');
  const uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  return out + header + data;
}
std::string f32(std::initializer_list<float> v) {
  std::string s;
  for (float x : v) s.append(reinterpret_cast<const char*>(&x), 4);
  return s;
}

// Byte-level corruptions of a valid safetensors file; each must be refused by the reader.
std::vector<std::pair<std::string, std::function<std::string(const std::string&)>>> safetensors_corruptions() {
  auto header_of = [](const std::string& b) { uint64_t n = 0; for (int i = 7; i >= 0; --i) n = (n << 8) | uint8_t(b[i]); return b.substr(8, n); };
  auto data_of = [header_of](const std::string& b) { return b.substr(8 + header_of(b).size()); };
  const std::string t = R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  return {
      {"empty", [](const std::string&) { return std::string(); }},
      {"short", [](const std::string& b) { return b.substr(0, 5); }},
      {"truncated", [](const std::string& b) { return b.substr(0, b.size() - 3); }},
      {"trailing", [](const std::string& b) { return b + "xyz"; }},
      {"header-huge", [](const std::string& b) { std::string c = b; c[5] = 0x7f; return c; }},
      {"header-past-end", [header_of](const std::string& b) { return st_bytes(header_of(b) + std::string(64, ' '), "").substr(0, 8) + header_of(b); }},
      {"not-json", [data_of](const std::string& b) { return st_bytes("{\"a\":", data_of(b)); }},
      {"not-object", [](const std::string&) { return st_bytes("[1,2]", ""); }},
      {"bad-utf8", [](const std::string&) { return st_bytes("{\"\xff\xfe\":1}", ""); }},
      {"duplicate-key", [](const std::string&) {
         return st_bytes(R"({"t":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"t":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", f32({1, 2})); }},
      {"overlap", [](const std::string&) {
         return st_bytes(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", f32({1, 2, 3})); }},
      {"gap", [](const std::string&) { return st_bytes(R"({"t":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", f32({1, 2})); }},
      {"size-mismatch", [](const std::string&) { return st_bytes(R"({"t":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", f32({1, 2})); }},
      {"bad-dtype", [](const std::string&) { return st_bytes(R"({"t":{"dtype":"F99","shape":[2],"data_offsets":[0,8]}})", f32({1, 2})); }},
      {"negative-dim", [](const std::string&) { return st_bytes(R"({"t":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", f32({1, 2})); }},
      {"float-dim", [](const std::string&) { return st_bytes(R"({"t":{"dtype":"F32","shape":[2.5],"data_offsets":[0,8]}})", f32({1, 2})); }},
      {"shape-overflow", [](const std::string&) {
         return st_bytes(R"({"t":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,8]}})", f32({1, 2})); }},
      {"missing-offsets", [](const std::string&) { return st_bytes(R"({"t":{"dtype":"F32","shape":[2]}})", f32({1, 2})); }},
      {"extra-field", [](const std::string&) { return st_bytes(R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[0,8],"x":1}})", f32({1, 2})); }},
      {"metadata-number", [t](const std::string&) { return st_bytes(R"({"__metadata__":{"a":1},)" + t.substr(1), f32({1, 2})); }},
      {"rank-6", [](const std::string&) { return st_bytes(R"({"t":{"dtype":"F32","shape":[1,1,1,1,1,2],"data_offsets":[0,8]}})", f32({1, 2})); }},
      {"bool-dtype", [](const std::string&) { return st_bytes(R"({"t":{"dtype":"BOOL","shape":[2],"data_offsets":[0,2]}})", "\x01\x00"); }},
  };
}

// The tiny UNet's modules the adapters below adapt.
const char* kLinear = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q";

// Raw PEFT / kohya safetensors of one linear module with the given factors (no validation on the way out).
std::string peft_file(const std::vector<int64_t>& a_shape, const std::vector<int64_t>& b_shape, float value,
                      const std::string& metadata = "") {
  auto numel = [](const std::vector<int64_t>& s) { int64_t n = 1; for (auto d : s) n *= d; return n; };
  const int64_t na = numel(a_shape), nb = numel(b_shape);
  std::string data;
  for (int64_t i = 0; i < na + nb; ++i) data.append(reinterpret_cast<const char*>(&value), 4);
  json h;
  const std::string base = std::string("unet.") + kLinear;
  h[base + ".lora_A.weight"] = {{"dtype", "F32"}, {"shape", a_shape}, {"data_offsets", {0, 4 * na}}};
  h[base + ".lora_B.weight"] = {{"dtype", "F32"}, {"shape", b_shape}, {"data_offsets", {4 * na, 4 * (na + nb)}}};
  if (!metadata.empty()) h["__metadata__"] = {{"lora_adapter_metadata", metadata}};
  return st_bytes(h.dump(), data);
}
std::string kohya_file(float alpha, float value = 0.1f) {
  LoraAdapter a;
  a.modules[kLinear] = LoraFactors{Tensor::full({2, 8}, value), Tensor::full({8, 2}, value), 1.0};
  std::string data;
  json h;
  const std::string base = "lora_unet_" + module_to_kohya_name(kLinear);
  h[base + ".alpha"] = {{"dtype", "F32"}, {"shape", json::array()}, {"data_offsets", {0, 4}}};
  data += f32({alpha});
  h[base + ".lora_down.weight"] = {{"dtype", "F32"}, {"shape", {2, 8}}, {"data_offsets", {4, 4 + 64}}};
  h[base + ".lora_up.weight"] = {{"dtype", "F32"}, {"shape", {8, 2}}, {"data_offsets", {68, 68 + 64}}};
  for (int i = 0; i < 32; ++i) data += f32({value});
  return st_bytes(h.dump(), data);
}
void hdf5_adapter(const fs::path& p, const Tensor& a, const Tensor& b, double alpha, bool with_b = true) {
  fs::create_directories(p.parent_path());
  Hdf5File f = Hdf5File::create(p.string());
  const std::string g = std::string("/lora/") + kLinear;
  f.create_group(g);
  f.write(g + "/A", a);
  if (with_b) f.write(g + "/B", b);
  f.set_attribute(g, "alpha", alpha);
}

// A copy of the workspace model with `edit` applied to one of its files.
void model_copy(const fs::path& C, const std::function<void(const fs::path& model)>& edit) {
  fs::copy(W() / "model", C / "model", fs::copy_options::recursive);
  edit(C / "model");
}
void edit_json(const fs::path& file, const std::function<void(json&)>& edit) {
  json j = json::parse(slurp(file));
  edit(j);
  spit(file, j.dump(2));
}

// A copy of the trained run with its newest checkpoint edited.
void run_copy(const fs::path& C, const std::function<void(TrainingState&)>& edit) {
  fs::copy(W() / "run", C / "run", fs::copy_options::recursive);
  const std::string latest = latest_checkpoint((C / "run/checkpoints").string());
  TrainingState t = load_checkpoint(latest);
  edit(t);
  fs::remove(latest);
  save_checkpoint((C / "run/checkpoints").string(), t, 100);
}

std::vector<Case> all_cases() {
  std::vector<Case> cases;
  auto add = [&](std::string name, std::string tool, std::string args, std::function<void(const fs::path&)> setup,
                 std::vector<std::string> mentions) {
    cases.push_back({std::move(name), std::move(tool), std::move(args), std::move(setup), std::move(mentions)});
  };
  auto none = [](const fs::path&) {};
  const std::string sample = "--model {W}/model --labels 0,1 --steps 1 --threads 1 ";
  const std::string sample_cond = "--model {W}/model --cond {W}/cond.safetensors --steps 1 --threads 1 ";

  // 1. Every safetensors corruption at every place a safetensors file comes in.
  auto valid = [] { return slurp(W() / "pytorch_lora_weights.safetensors"); };  // read when a case runs
  for (const auto& [what, corrupt] : safetensors_corruptions()) {
    auto file = [corrupt = corrupt, valid](const std::string& name) {
      return [=](const fs::path& C) { spit(C / name, corrupt(valid())); };
    };
    add("st-" + what + "-lcm-lora", "lcm-sample", sample + "--lora {C}/x.safetensors --out {O}/g.png", file("x.safetensors"), {"x.safetensors"});
    add("st-" + what + "-inspect", "lora-merge", "inspect {C}/x.safetensors", file("x.safetensors"), {"x.safetensors"});
    add("st-" + what + "-combine", "lora-merge", "combine {O}/m.safetensors {W}/pytorch_lora_weights.safetensors {C}/x.safetensors",
        file("x.safetensors"), {"x.safetensors"});
    add("st-" + what + "-cond", "lcm-sample", "--model {W}/model --cond {C}/c.safetensors --steps 1 --out {O}/g.png", file("c.safetensors"),
        {"c.safetensors"});
    add("st-" + what + "-unet-weights", "lcm-sample", "--model {C}/model --labels 0,1 --steps 1 --out {O}/g.png", [=](const fs::path& C) {
          model_copy(C, [&](const fs::path& m) { spit(m / "unet/diffusion_pytorch_model.safetensors", corrupt(valid())); });
        }, {"diffusion_pytorch_model.safetensors"});
  }
  // The bad file given as an adapter / noise / cond where it is a *valid* safetensors of the wrong content.
  add("cond-missing-tensor", "lcm-sample", "--model {W}/model --cond {W}/noise.safetensors --out {O}/g.png", none, {"noise.safetensors", "cond"});
  add("noise-missing-tensor", "lcm-sample", sample_cond + "--noise {W}/cond.safetensors --out {O}/g.png", none, {"cond.safetensors", "noise"});
  add("adapter-is-cond-file", "lora-merge", "inspect {W}/cond.safetensors", none, {"cond.safetensors"});
  add("model-weights-as-adapter", "lora-merge", "inspect {W}/model/unet/diffusion_pytorch_model.safetensors", none,
      {"diffusion_pytorch_model.safetensors"});

  // 2. Adapters that parse but are not LoRAs, in every format, at every tool that reads adapters.
  struct BadAdapter {
    std::string name, file;
    std::function<void(const fs::path&)> write;
  };
  const std::vector<BadAdapter> bad_adapters = {
      {"rank0-peft", "a.safetensors", [](const fs::path& p) { spit(p, peft_file({0, 8}, {8, 0}, 0.1f)); }},
      {"rank-mismatch-peft", "a.safetensors", [](const fs::path& p) { spit(p, peft_file({2, 8}, {8, 3}, 0.1f)); }},
      {"wrong-in-peft", "a.safetensors", [](const fs::path& p) { spit(p, peft_file({2, 5}, {8, 2}, 0.1f)); }},
      {"rank3-factors-peft", "a.safetensors", [](const fs::path& p) { spit(p, peft_file({2, 8, 1}, {8, 2, 1}, 0.1f)); }},
      {"nan-peft", "a.safetensors", [](const fs::path& p) { spit(p, peft_file({2, 8}, {8, 2}, std::nanf(""))); }},
      {"inf-peft", "a.safetensors", [](const fs::path& p) { spit(p, peft_file({2, 8}, {8, 2}, INFINITY)); }},
      {"negative-alpha-peft", "a.safetensors", [](const fs::path& p) { spit(p, peft_file({2, 8}, {8, 2}, 0.1f, R"({"unet.lora_alpha": -4})")); }},
      {"string-alpha-peft", "a.safetensors", [](const fs::path& p) { spit(p, peft_file({2, 8}, {8, 2}, 0.1f, R"({"unet.lora_alpha": "4"})")); }},
      {"bad-metadata-json-peft", "a.safetensors", [](const fs::path& p) { spit(p, peft_file({2, 8}, {8, 2}, 0.1f, "{unet")); }},
      {"bad-pattern-peft", "a.safetensors", [](const fs::path& p) {
         spit(p, peft_file({2, 8}, {8, 2}, 0.1f, R"({"unet.alpha_pattern": {"to_q": "x"}})")); }},
      {"negative-alpha-kohya", "k.safetensors", [](const fs::path& p) { spit(p, kohya_file(-1.0f)); }},
      {"nan-alpha-kohya", "k.safetensors", [](const fs::path& p) { spit(p, kohya_file(std::nanf(""))); }},
      {"inf-weights-kohya", "k.safetensors", [](const fs::path& p) { spit(p, kohya_file(2.0f, -INFINITY)); }},
      {"one-factor-kohya", "k.safetensors", [](const fs::path& p) {
         const std::string base = "lora_unet_" + module_to_kohya_name(kLinear);
         json h = {{base + ".lora_down.weight", {{"dtype", "F32"}, {"shape", {2, 8}}, {"data_offsets", {0, 64}}}}};
         spit(p, st_bytes(h.dump(), std::string(64, '\0'))); }},
      {"unknown-key", "u.safetensors", [](const fs::path& p) {
         json h = {{"something.else", {{"dtype", "F32"}, {"shape", {1}}, {"data_offsets", {0, 4}}}}};
         spit(p, st_bytes(h.dump(), f32({1}))); }},
      {"rank0-hdf5", "a.h5", [](const fs::path& p) { hdf5_adapter(p, Tensor::empty({0, 8}), Tensor::empty({8, 0}), 1.0); }},
      {"rank-mismatch-hdf5", "a.h5", [](const fs::path& p) { hdf5_adapter(p, Tensor::full({4, 8}, 0.1f), Tensor::full({8, 2}, 0.1f), 4.0); }},
      {"missing-b-hdf5", "a.h5", [](const fs::path& p) { hdf5_adapter(p, Tensor::full({2, 8}, 0.1f), Tensor(), 2.0, false); }},
      {"nan-hdf5", "a.h5", [](const fs::path& p) { hdf5_adapter(p, Tensor::full({2, 8}, std::nanf("")), Tensor::full({8, 2}, 0.1f), 2.0); }},
      {"negative-alpha-hdf5", "a.h5", [](const fs::path& p) { hdf5_adapter(p, Tensor::full({2, 8}, 0.1f), Tensor::full({8, 2}, 0.1f), -2.0); }},
      {"not-hdf5", "a.h5", [](const fs::path& p) { spit(p, "this is not an HDF5 file"); }},
      {"empty-hdf5", "a.h5", [](const fs::path& p) { Hdf5File::create(p.string()); }},
      {"wrong-module-peft", "a.safetensors", [](const fs::path& p) {
         LoraAdapter a;
         a.modules["down_blocks.7.nothing"] = LoraFactors{Tensor::full({2, 8}, 0.1f), Tensor::full({8, 2}, 0.1f), 2.0};
         write_lora(p.string(), a, LoraFormat::kDiffusers); }},
      {"wrong-shape-for-model", "a.safetensors", [](const fs::path& p) {
         LoraAdapter a;
         a.modules[kLinear] = LoraFactors{Tensor::full({2, 16}, 0.1f), Tensor::full({16, 2}, 0.1f), 2.0};
         write_lora(p.string(), a, LoraFormat::kDiffusers); }},
  };
  for (const auto& b : bad_adapters) {
    auto setup = [b](const fs::path& C) { b.write(C / b.file); };
    const std::string f = "{C}/" + b.file;
    if (b.name.find("for-model") == std::string::npos && b.name.find("wrong-") != 0)  // those are LoRAs, of another model
      add("adapter-" + b.name + "-inspect", "lora-merge", "inspect " + f, setup, {b.file});
    add("adapter-" + b.name + "-lcm", "lcm-sample", sample + "--lora " + f + " --out {O}/g.png", setup, {b.file});
    add("adapter-" + b.name + "-fold", "lora-merge", "fold --unet {W}/model/unet --out {O}/unet " + f, setup, {b.file});
    add("adapter-" + b.name + "-train", "lcd-train", "{C}/t.json", [b](const fs::path& C) {
          b.write(C / b.file);
          json t = train_config(C.parent_path() / "out" / "run");
          t["lora"]["init_adapter"] = (C / b.file).string();
          spit(C / "t.json", t.dump());
        }, {b.file});
  }
  for (const std::string name : {"rank0-peft", "nan-hdf5", "negative-alpha-kohya"}) {
    for (const auto& b : bad_adapters)
      if (b.name == name) {
        auto setup = [b](const fs::path& C) { b.write(C / b.file); };
        add("adapter-" + b.name + "-combine", "lora-merge", "combine {O}/m.safetensors {C}/" + b.file, setup, {b.file});
        add("adapter-" + b.name + "-convert", "lora-merge", "convert {C}/" + b.file + " {O}/m.safetensors --format kohya", setup, {b.file});
      }
  }

  // 3. Command-line values: ranges, wrap-around, types, combinations.
  for (const auto& [flag, value] : std::vector<std::pair<std::string, std::string>>{
           {"--steps", "0"}, {"--steps", "-1"}, {"--steps", "4294967297"}, {"--steps", "abc"}, {"--steps", "1.5"},
           {"--steps", ""}, {"--batch", "0"}, {"--batch", "99999999999"}, {"--seed", "-1"}, {"--seed", "x"},
           {"--seed", "99999999999999999999999"}, {"--per-label", "0"}, {"--per-label", "1000000000"},
           {"--guidance", "nan"}, {"--guidance", "inf"}, {"--guidance", "1e999"}, {"--guidance", "two"},
           {"--threads", "0"}, {"--threads", "-3"}, {"--labels", "4294967296"}, {"--labels", "99"}, {"--labels", "-1"},
           {"--labels", "0,,1"}, {"--labels", "a"}, {"--num", "5"}, {"--precision", "fp8"}, {"--sampler", "euler"}}) {
    std::string args = "--model {W}/model --steps 1 --out {O}/g.png ";
    if (flag != "--labels") args += "--labels 0,1 ";
    add("flag" + flag + "=" + (value.empty() ? "empty" : value), "lcm-sample", args + flag + " '" + value + "'", none, {flag});
  }
  add("flag-unknown", "lcm-sample", sample + "--outt {O}/g.png", none, {"--outt"});
  add("flag-missing-value", "lcm-sample", sample + "--out", none, {"--out"});
  add("flag-no-output", "lcm-sample", sample, none, {"--out"});
  add("flag-labels-and-cond", "lcm-sample", sample + "--cond {W}/cond.safetensors --out {O}/g.png", none, {"--labels"});
  add("flag-no-model", "lcm-sample", "--labels 0 --out {O}/g.png", none, {"--model"});
  add("flag-model-missing", "lcm-sample", "--model {C}/nothing --labels 0 --out {O}/g.png", none, {"nothing"});
  add("flag-lora-weight-abc", "lcm-sample", sample + "--lora {W}/pytorch_lora_weights.safetensors:abc --out {O}/g.png", none, {"abc"});
  add("flag-lora-missing", "lcm-sample", sample + "--lora {C}/none.safetensors --out {O}/g.png", none, {"none.safetensors"});
  add("flag-guidance-needs-uncond", "lcm-sample", "--unet {W}/model/unet --vae {W}/model/vae --cond {C}/c.safetensors --guidance 3 --steps 1 --out {O}/g.png",
      [](const fs::path& C) { write_safetensors((C / "c.safetensors").string(), {{"cond", Tensor::full({1, 3, 8}, 0.1f)}}); }, {"--guidance"});
  add("merge-no-command", "lora-merge", "frobnicate", none, {"frobnicate"});
  add("merge-combine-one-arg", "lora-merge", "combine {O}/m.safetensors", none, {"combine"});
  add("merge-svd-no-rank", "lora-merge", "combine {O}/m.safetensors {W}/pytorch_lora_weights.safetensors --method svd", none, {"--rank"});
  add("merge-svd-rank-0", "lora-merge", "combine {O}/m.safetensors {W}/pytorch_lora_weights.safetensors --method svd --rank 0", none, {"--rank"});
  add("merge-svd-energy-2", "lora-merge", "combine {O}/m.safetensors {W}/pytorch_lora_weights.safetensors --method svd --energy 2", none, {"energy"});
  add("merge-weight-abc", "lora-merge", "combine {O}/m.safetensors {W}/pytorch_lora_weights.safetensors:abc", none, {"abc"});
  add("merge-bad-format", "lora-merge", "convert {W}/pytorch_lora_weights.safetensors {O}/m.safetensors --format onnx", none, {"--format"});
  add("merge-bad-dtype", "lora-merge", "convert {W}/pytorch_lora_weights.safetensors {O}/m.safetensors --format kohya --dtype F8", none, {"--dtype"});
  add("merge-extract-rank-huge", "lora-merge", "extract --base {W}/model/unet --tuned {W}/model/unet --rank 99999999999 {O}/m.safetensors", none, {"--rank"});
  add("merge-extract-equal", "lora-merge", "extract --base {W}/model/unet --tuned {W}/model/unet --rank 2 {O}/m.safetensors", none, {"equals"});
  add("merge-fold-no-unet", "lora-merge", "fold --out {O}/unet {W}/pytorch_lora_weights.safetensors", none, {"--unet"});
  add("train-no-config", "lcd-train", "", none, {"CONFIG"});
  add("train-config-missing", "lcd-train", "{C}/none.json", none, {"none.json"});
  add("train-threads-bad", "lcd-train", "{W}/train.json --threads 4294967296", none, {"--threads"});

  // 4. No output may be an input (through ./, symlinks and trailing slashes).
  add("out-is-lora", "lcm-sample", sample + "--lora {W}/pytorch_lora_weights.safetensors --out {W}/pytorch_lora_weights.safetensors", none, {"--out"});
  add("out-is-lora-dotted", "lcm-sample", sample + "--lora {W}/pytorch_lora_weights.safetensors --out {W}/./pytorch_lora_weights.safetensors", none, {"--out"});
  add("latents-out-is-noise", "lcm-sample", sample_cond + "--noise {W}/noise.safetensors --latents-out {W}/noise.safetensors", none, {"--latents-out"});
  add("latents-out-is-cond", "lcm-sample", sample_cond + "--latents-out {W}/cond.safetensors", none, {"--latents-out"});
  add("out-via-symlink", "lcm-sample", sample + "--lora {W}/pytorch_lora_weights.safetensors --out {C}/link.safetensors",
      [](const fs::path& C) { fs::create_symlink(W() / "pytorch_lora_weights.safetensors", C / "link.safetensors"); }, {"--out"});
  add("out-dir-in-model", "lcm-sample", sample + "--out-dir {W}/model/unet/", none, {"--out-dir"});
  add("out-in-model", "lcm-sample", sample + "--out {W}/model/vae/config.json", none, {"--out"});
  add("combine-out-is-input", "lora-merge", "combine {W}/pytorch_lora_weights.safetensors {W}/pytorch_lora_weights.safetensors", none, {"output"});
  add("combine-out-is-input-symlink", "lora-merge", "combine {C}/l.safetensors {W}/pytorch_lora_weights.safetensors",
      [](const fs::path& C) { fs::create_symlink(W() / "pytorch_lora_weights.safetensors", C / "l.safetensors"); }, {"output"});
  add("convert-out-is-input", "lora-merge", "convert {W}/adapter.h5 {W}/./adapter.h5 --format hdf5", none, {"output"});
  add("fold-out-is-unet", "lora-merge", "fold --unet {W}/model/unet --out {W}/model/unet/ {W}/pytorch_lora_weights.safetensors", none, {"--out"});
  add("fold-out-in-unet", "lora-merge", "fold --unet {W}/model/unet --out {W}/model/unet/sub {W}/pytorch_lora_weights.safetensors", none, {"--out"});
  add("extract-out-in-base", "lora-merge", "extract --base {W}/model/unet --tuned {W}/model/unet --rank 2 {W}/model/unet/x.safetensors", none, {"output"});
  auto train_with = [&](std::string name, std::function<void(json&, const fs::path& C)> edit, std::vector<std::string> mentions) {
    add("train-" + name, "lcd-train", "{C}/t.json", [edit](const fs::path& C) {
          json t = train_config(C.parent_path() / "out" / "run");
          edit(t, C);
          spit(C / "t.json", t.dump(2));
        }, std::move(mentions));
  };
  train_with("output-dir-is-model-unet", [](json& t, const fs::path&) { t["output_dir"] = (W() / "model/unet").string(); }, {"output_dir"});
  train_with("output-dir-in-model", [](json& t, const fs::path&) { t["output_dir"] = (W() / "model/run").string(); }, {"output_dir"});
  train_with("output-dir-is-images", [](json& t, const fs::path&) { t["output_dir"] = (W() / "images/").string(); }, {"output_dir"});
  train_with("cache-is-model-weights", [](json& t, const fs::path&) {
    t["data"]["latent_cache"] = (W() / "model/unet/diffusion_pytorch_model.safetensors").string(); }, {"latent_cache"});
  train_with("init-adapter-in-run-adapter", [](json& t, const fs::path& C) {
    fs::create_directories(C / "run/adapter");
    fs::copy_file(W() / "pytorch_lora_weights.safetensors", C / "run/adapter/pytorch_lora_weights.safetensors");
    t["lora"]["init_adapter"] = (C / "run/adapter/pytorch_lora_weights.safetensors").string();
    t["output_dir"] = (C / "run").string(); }, {"lora.init_adapter"});
  add("train-config-is-run-config", "lcd-train", "{C}/config.json", [](const fs::path& C) {
        json t = train_config(C);
        spit(C / "config.json", t.dump(2));
      }, {"the config"});

  // 5. Model folders that are not models.
  auto model_case = [&](std::string name, std::function<void(const fs::path& m)> edit, std::vector<std::string> mentions) {
    add("model-" + name, "lcm-sample", "--model {C}/model --labels 0,1 --steps 1 --out {O}/g.png",
        [edit](const fs::path& C) { model_copy(C, edit); }, mentions);
    add("model-" + name + "-train", "lcd-train", "{C}/t.json", [edit](const fs::path& C) {
          model_copy(C, edit);
          json t = train_config(C.parent_path() / "out" / "run");
          t["model"] = (C / "model").string();
          spit(C / "t.json", t.dump(2));
        }, mentions);
  };
  auto unet_field = [&](std::string name, std::string key, json value) {
    model_case("unet-" + name, [key, value](const fs::path& m) { edit_json(m / "unet/config.json", [&](json& j) { j[key] = value; }); },
               {"config.json", "diffusion_pytorch_model.safetensors"});
  };
  unet_field("heads-0", "attention_head_dim", 0);
  unet_field("heads-3", "attention_head_dim", 3);
  unet_field("heads-negative", "attention_head_dim", -2);
  unet_field("heads-string", "attention_head_dim", "2");
  unet_field("heads-list-short", "attention_head_dim", {2});
  unet_field("groups-0", "norm_num_groups", 0);
  unet_field("groups-3", "norm_num_groups", 3);
  unet_field("layers-0", "layers_per_block", 0);
  unet_field("in-channels-0", "in_channels", 0);
  unet_field("in-channels-huge", "in_channels", 99999999999LL);
  unet_field("cross-dim-negative", "cross_attention_dim", -8);
  unet_field("blocks-empty", "block_out_channels", json::array());
  unet_field("blocks-zero", "block_out_channels", {0, 16});
  unet_field("blocks-length", "block_out_channels", {8, 16, 16});
  unet_field("sample-size-0", "sample_size", 0);
  unet_field("sample-size-odd", "sample_size", 7);
  unet_field("eps-0", "norm_eps", 0);
  unet_field("unknown-field", "frobnicate", 1);
  unet_field("unsupported-act", "act_fn", "gelu");
  unet_field("down-type", "down_block_types", {"CrossAttnDownBlock2D", "Nope"});
  auto vae_field = [&](std::string name, std::string key, json value) {
    model_case("vae-" + name, [key, value](const fs::path& m) { edit_json(m / "vae/config.json", [&](json& j) { j[key] = value; }); },
               {"config.json", "diffusion_pytorch_model.safetensors"});
  };
  vae_field("groups-0", "norm_num_groups", 0);
  vae_field("scaling-0", "scaling_factor", 0);
  vae_field("scaling-string", "scaling_factor", "0.5");
  vae_field("latent-channels-3", "latent_channels", 3);
  vae_field("blocks-empty", "block_out_channels", json::array());
  vae_field("sample-size-odd", "sample_size", 30);
  model_case("unet-config-not-json", [](const fs::path& m) { spit(m / "unet/config.json", "{\"in_channels\": "); }, {"config.json"});
  model_case("unet-config-array", [](const fs::path& m) { spit(m / "unet/config.json", "[]"); }, {"config.json"});
  model_case("unet-config-missing", [](const fs::path& m) { fs::remove(m / "unet/config.json"); }, {"config.json"});
  model_case("unet-weights-missing", [](const fs::path& m) { fs::remove(m / "unet/diffusion_pytorch_model.safetensors"); },
             {"diffusion_pytorch_model.safetensors"});
  model_case("vae-weights-missing", [](const fs::path& m) { fs::remove(m / "vae/diffusion_pytorch_model.safetensors"); },
             {"diffusion_pytorch_model.safetensors"});
  auto edit_weights = [](const fs::path& file, const std::function<void(std::map<std::string, Tensor>&)>& edit) {
    SafetensorsFile f = SafetensorsFile::read(file.string());
    std::map<std::string, Tensor> tensors;
    for (const auto& n : f.names()) tensors[n] = f.tensor(n);
    edit(tensors);
    std::vector<SafetensorsTensor> out;
    for (auto& [n, t] : tensors) out.push_back({n, t});
    write_safetensors(file.string(), out);
  };
  model_case("unet-weights-nan", [=](const fs::path& m) {
    edit_weights(m / "unet/diffusion_pytorch_model.safetensors", [](auto& t) { t["conv_in.weight"].data()[3] = std::nanf(""); }); },
             {"conv_in.weight"});
  model_case("vae-weights-inf", [=](const fs::path& m) {
    edit_weights(m / "vae/diffusion_pytorch_model.safetensors", [](auto& t) { t.begin()->second.data()[0] = INFINITY; }); },
             {"diffusion_pytorch_model.safetensors"});
  model_case("unet-weights-missing-key", [=](const fs::path& m) {
    edit_weights(m / "unet/diffusion_pytorch_model.safetensors", [](auto& t) { t.erase("conv_in.bias"); }); }, {"conv_in.bias"});
  model_case("unet-weights-wrong-shape", [=](const fs::path& m) {
    edit_weights(m / "unet/diffusion_pytorch_model.safetensors", [](auto& t) { t["conv_in.bias"] = Tensor::full({3}, 0.0f); }); },
             {"conv_in.bias"});
  model_case("cond-table-nan", [](const fs::path& m) {
    Tensor t = Tensor::full({5, 3, 8}, 0.1f);
    t.data()[7] = std::nanf("");
    write_safetensors((m / "cond_embeddings.safetensors").string(), {{"cond_embeddings", t}}); }, {"cond_embeddings"});
  model_case("cond-table-rank2", [](const fs::path& m) {
    write_safetensors((m / "cond_embeddings.safetensors").string(), {{"cond_embeddings", Tensor::full({5, 8}, 0.1f)}}); }, {"cond_embeddings"});
  model_case("cond-table-wrong-name", [](const fs::path& m) {
    write_safetensors((m / "cond_embeddings.safetensors").string(), {{"table", Tensor::full({5, 3, 8}, 0.1f)}}); }, {"cond_embeddings"});
  model_case("cond-table-wrong-dim", [](const fs::path& m) {
    write_safetensors((m / "cond_embeddings.safetensors").string(), {{"cond_embeddings", Tensor::full({5, 3, 6}, 0.1f)}}); },
             {"cond_embeddings", "cross_attention_dim", "conditions"});
  auto scheduler = [&](std::string name, json cfg) {
    model_case("scheduler-" + name, [cfg](const fs::path& m) { spit(m / "scheduler/scheduler_config.json", cfg.dump()); },
               {"scheduler_config.json"});
  };
  scheduler("timesteps-0", {{"num_train_timesteps", 0}});
  scheduler("beta-negative", {{"beta_start", -0.1}});
  scheduler("beta-order", {{"beta_start", 0.5}, {"beta_end", 0.1}});
  scheduler("beta-string", {{"beta_end", "0.02"}});
  scheduler("kind", {{"beta_schedule", "cosine"}});
  scheduler("prediction", {{"prediction_type", "flow"}});

  // 6. Conditions and noise that do not fit.
  auto cond_case = [&](std::string name, std::function<void(const fs::path& file)> write, std::vector<std::string> mentions) {
    add("cond-" + name, "lcm-sample", "--model {W}/model --cond {C}/c.safetensors --steps 1 --out {O}/g.png",
        [write](const fs::path& C) { write(C / "c.safetensors"); }, mentions);
  };
  auto cond_file = [](Tensor cond, Tensor uncond) {
    return [=](const fs::path& p) {
      std::vector<SafetensorsTensor> t = {{"cond", cond}};
      if (uncond.defined()) t.push_back({"uncond", uncond});
      write_safetensors(p.string(), t);
    };
  };
  Tensor nan_cond = Tensor::full({2, 3, 8}, 0.1f);
  nan_cond.data()[5] = std::nanf("");
  cond_case("rank2", cond_file(Tensor::full({2, 8}, 0.1f), Tensor()), {"c.safetensors"});
  cond_case("scalar", cond_file(Tensor::full({}, 0.1f), Tensor()), {"c.safetensors"});
  cond_case("batch-0", cond_file(Tensor::empty({0, 3, 8}), Tensor()), {"c.safetensors"});
  cond_case("length-0", cond_file(Tensor::empty({2, 0, 8}), Tensor()), {"c.safetensors"});
  cond_case("dim-6", cond_file(Tensor::full({2, 3, 6}, 0.1f), Tensor()), {"c.safetensors"});
  cond_case("nan", cond_file(nan_cond, Tensor()), {"c.safetensors"});
  cond_case("uncond-wrong-length", cond_file(Tensor::full({2, 3, 8}, 0.1f), Tensor::full({1, 4, 8}, 0.1f)), {"c.safetensors"});
  cond_case("uncond-wrong-batch", cond_file(Tensor::full({2, 3, 8}, 0.1f), Tensor::full({3, 3, 8}, 0.1f)), {"c.safetensors"});
  cond_case("uncond-inf", cond_file(Tensor::full({2, 3, 8}, 0.1f), Tensor::full({1, 3, 8}, INFINITY)), {"c.safetensors"});
  auto noise_case = [&](std::string name, Tensor noise) {
    add("noise-" + name, "lcm-sample", sample_cond + "--noise {C}/n.safetensors --out {O}/g.png",
        [noise](const fs::path& C) { write_safetensors((C / "n.safetensors").string(), {{"noise", noise}}); }, {"n.safetensors"});
  };
  Tensor nan_noise = Tensor::full({2, 2, 8, 8}, 0.1f);
  nan_noise.data()[100] = std::nanf("");
  noise_case("nan", nan_noise);
  noise_case("batch", Tensor::full({3, 2, 8, 8}, 0.1f));
  noise_case("channels", Tensor::full({2, 3, 8, 8}, 0.1f));
  noise_case("rank3", Tensor::full({2, 2, 8}, 0.1f));
  noise_case("odd-size", Tensor::full({2, 2, 7, 7}, 0.1f));
  noise_case("empty", Tensor::empty({2, 2, 0, 0}));

  // 7. Training configs.
  train_with("not-json", [](json&, const fs::path& C) {}, {"t.json"});
  cases.back().setup = [](const fs::path& C) { spit(C / "t.json", "{\"seed\": 1,"); };
  train_with("not-object", [](json&, const fs::path&) {}, {"t.json"});
  cases.back().setup = [](const fs::path& C) { spit(C / "t.json", "[1, 2]"); };
  train_with("number-overflow", [](json&, const fs::path&) {}, {"t.json"});
  cases.back().setup = [](const fs::path& C) { spit(C / "t.json", "{\"optim\": {\"lr\": 1e999}}"); };
  for (const auto& [key, value, mention] : std::vector<std::tuple<std::string, json, std::string>>{
           {"/train/steps", 0, "train.steps"},
           {"/train/steps", 4294967297LL, "train.steps"},
           {"/train/steps", "10", "train.steps"},
           {"/train/steps", 1.5, "train.steps"},
           {"/train/batch_size", 0, "train.batch_size"},
           {"/train/batch_size", 100000, "train.batch_size"},
           {"/train/batch_size", 64, "train.batch_size"},
           {"/train/precision", "fp16", "train.precision"},
           {"/train/time_limit_minutes", -1, "train.time_limit_minutes"},
           {"/seed", -1, "seed"},
           {"/seed", "7", "seed"},
           {"/threads", 99999, "threads"},
           {"/lora/rank", 0, "lora.rank"},
           {"/lora/rank", -4, "lora.rank"},
           {"/lora/rank", 100000, "lora.rank"},
           {"/lora/alpha", 0, "lora.alpha"},
           {"/lora/alpha", -1, "lora.alpha"},
           {"/lora/targets", {"to_q", 3}, "lora.targets[1]"},
           {"/lora/targets", {""}, "lora.targets"},
           {"/lora/targets", {"no_such_module"}, "no_such_module"},
           {"/lora/init_adapter", "/nonexistent.safetensors", "lora.init_adapter"},
           {"/lcd/num_ddim_timesteps", 0, "lcd.num_ddim_timesteps"},
           {"/lcd/num_ddim_timesteps", 7, "lcd.num_ddim_timesteps"},
           {"/lcd/guidance_min", -1, "lcd.guidance"},
           {"/lcd/ema_decay", 1.0, "lcd.ema_decay"},
           {"/lcd/solver", "euler", "lcd.solver"},
           {"/lcd/huber_c", 0, "lcd.huber_c"},
           {"/lcd/loss", "l1", "lcd.loss"},
           {"/optim/lr", 0, "optim.lr"},
           {"/optim/lr", -1e-4, "optim.lr"},
           {"/optim/beta1", 1.0, "optim.beta1"},
           {"/optim/eps", 0, "optim.eps"},
           {"/optim/schedule", "linear", "optim.schedule"},
           {"/optim/warmup_steps", -1, "optim.warmup_steps"},
           {"/diffusion/cond_dropout", 2, "diffusion.cond_dropout"},
           {"/checkpoint/every", 0, "checkpoint.every"},
           {"/checkpoint/keep", 0, "checkpoint.keep"},
           {"/log/every", 0, "log.every"},
           {"/samples/labels", {0, "1"}, "samples.labels[1]"},
           {"/samples/labels", {0, 9}, "samples.labels"},
           {"/samples/labels", {-1}, "samples.labels"},
           {"/samples/lcm_steps", {0}, "samples.lcm_steps"},
           {"/samples/lcm_steps", {1.5}, "samples.lcm_steps[0]"},
           {"/samples/per_label", 0, "samples.per_label"},
           {"/samples/teacher_steps", 0, "samples.teacher_steps"},
           {"/data/source", "web", "data.source"},
           {"/data/split", "val", "data.split"},
           {"/data/limit", 0, "data.limit"},
           {"/data/style", "sepia", "data.style"},
           {"/data/path", "/nonexistent", "data.path"},
           {"/data/encode_batch", 0, "data.encode_batch"},
           {"/data/frobnicate", 1, "data.frobnicate"},
           {"/objective", "gan", "objective"},
           {"/model", "/nonexistent", "model"},
           {"/output_dir", "", "output_dir"},
           {"/lora/enabled", false, "lora.enabled"},
           {"/train", 5, "train"}}) {
    train_with("key" + key + "=" + value.dump(), [key = key, value = value](json& t, const fs::path&) { t[json::json_pointer(key)] = value; },
               {mention});
  }
  // The latent cache: wrong shapes, NaN, labels the model does not have.
  auto cache_case = [&](std::string name, std::function<void(LatentCache&)> edit, std::string mention) {
    train_with("cache-" + name, [edit](json& t, const fs::path& C) {
      LatentCache c = read_latent_cache((W() / "lat.h5").string());
      edit(c);
      write_latent_cache((C / "lat.h5").string(), c);
      t["data"]["latent_cache"] = (C / "lat.h5").string();
    }, {mention});
  };
  cache_case("latents-4x4", [](LatentCache& c) {
    c.latents = Tensor::full({c.latents.size(0), 2, 4, 4}, 0.1f);
    c.logvar = Tensor::full(c.latents.shape(), 0.0f); }, "lat.h5");
  cache_case("latents-channels", [](LatentCache& c) {
    c.latents = Tensor::full({c.latents.size(0), 3, 8, 8}, 0.1f);
    c.logvar = Tensor(); }, "lat.h5");
  cache_case("latents-nan", [](LatentCache& c) { c.latents.data()[10] = std::nanf(""); }, "lat.h5");
  cache_case("logvar-inf", [](LatentCache& c) { c.logvar.data()[10] = INFINITY; }, "lat.h5");
  cache_case("label-out-of-range", [](LatentCache& c) { c.labels[0] = 17; }, "lat.h5");
  cache_case("label-negative", [](LatentCache& c) { c.labels[1] = -3; }, "lat.h5");
  cache_case("fewer-latents", [](LatentCache& c) {
    c.latents = slice(c.latents, 0, 0, 8);
    c.logvar = slice(c.logvar, 0, 0, 8);
    c.labels.resize(8); }, "lat.h5");

  // 8. Resume from checkpoints that do not fit (the run folder is an input: it must stay as it was).
  auto resume_case = [&](std::string name, std::function<void(TrainingState&)> edit, std::string mention) {
    add("resume-" + name, "lcd-train", "{C}/run/config.json --resume {C}/run", [edit](const fs::path& C) { run_copy(C, edit); }, {mention});
  };
  // With older intact checkpoints present, a bad newest one is skipped; these cases keep only the bad one (below).
  resume_case("position-negative", [](TrainingState& t) { t.batcher_position = -5; }, "checkpoint");
  resume_case("position-past-epoch", [](TrainingState& t) { t.batcher_position = 1000; }, "checkpoint");
  resume_case("params-longer", [](TrainingState& t) { t.params.push_back(1); t.ema.push_back(1); t.adam_m.push_back(0); t.adam_v.push_back(0); },
              "checkpoint");
  resume_case("params-shorter", [](TrainingState& t) { t.params.pop_back(); t.ema.pop_back(); t.adam_m.pop_back(); t.adam_v.pop_back(); },
              "checkpoint");
  resume_case("params-nan", [](TrainingState& t) { t.params[0] = std::nanf(""); }, "checkpoint");
  resume_case("adam-v-negative", [](TrainingState& t) { t.adam_v[0] = -1; }, "checkpoint");
  resume_case("rng-garbage", [](TrainingState& t) { t.rng_state = "not a state"; }, "checkpoint");
  resume_case("config-garbage", [](TrainingState& t) { t.config_json = "{"; }, "checkpoint");
  resume_case("layout-other-model", [](TrainingState& t) { t.layout[0].first = "other"; }, "checkpoint");
  resume_case("adam-steps-negative", [](TrainingState& t) { t.adam_steps = -1; }, "checkpoint");
  resume_case("adam-steps-ahead", [](TrainingState& t) { t.adam_steps = t.step + 5; }, "checkpoint");
  for (auto& c : cases)
    if (c.name.rfind("resume-", 0) == 0) {
      auto inner = c.setup;
      c.setup = [inner](const fs::path& C) {  // drop the older, intact checkpoints so that nothing can be resumed
        inner(C);
        const auto all = checkpoints_newest_first((C / "run/checkpoints").string());
        for (size_t i = 1; i < all.size(); ++i) fs::remove(all[i]);
      };
    }
  add("resume-no-checkpoints", "lcd-train", "{C}/run/config.json --resume {C}/run", [](const fs::path& C) {
        fs::copy(W() / "run", C / "run", fs::copy_options::recursive);
        fs::remove_all(C / "run/checkpoints");
      }, {"checkpoint"});
  add("resume-truncated-only", "lcd-train", "{C}/run/config.json --resume {C}/run", [](const fs::path& C) {
        fs::copy(W() / "run", C / "run", fs::copy_options::recursive);
        const auto all = checkpoints_newest_first((C / "run/checkpoints").string());
        for (size_t i = 1; i < all.size(); ++i) fs::remove(all[i]);
        const std::string bytes = slurp(all[0]);
        spit(all[0], bytes.substr(0, bytes.size() / 2));
      }, {"checkpoint"});
  add("resume-changed-computation", "lcd-train", "{C}/t.json --resume {C}/run", [](const fs::path& C) {
        fs::copy(W() / "run", C / "run", fs::copy_options::recursive);
        json t = json::parse(slurp(C / "run/config.json"));
        t["lcd"]["huber_c"] = 0.5;
        spit(C / "t.json", t.dump());
      }, {"lcd.huber_c"});
  add("new-run-over-existing", "lcd-train", "{C}/t.json", [](const fs::path& C) {
        fs::copy(W() / "run", C / "run", fs::copy_options::recursive);
        json t = json::parse(slurp(C / "run/config.json"));
        t["output_dir"] = (C / "run").string();
        spit(C / "t.json", t.dump());
      }, {"already holds a run"});
  return cases;
}

class MalformedInput : public Corpus, public ::testing::WithParamInterface<Case> {};

TEST_P(MalformedInput, FailsCleanlyAndChangesNothing) {
  const Case& c = GetParam();
  std::string dir_name = c.name;  // a name the shell and the file system take as it is
  for (char& ch : dir_name)
    if (!std::isalnum(static_cast<unsigned char>(ch)) && ch != '-') ch = '_';
  const fs::path case_dir = g_root / "cases" / dir_name;
  const fs::path C = case_dir / "in", O = case_dir / "out";
  fs::create_directories(C);
  c.setup(C);
  const auto before = checksums(W()), before_case = checksums(C);
  const CmdResult r = run_tool(c.tool, expand(c.args, C, O));
  EXPECT_TRUE(r.status == 1 || r.status == 2) << c.tool << " exited " << r.status << ":\n" << r.output;
  std::vector<std::string> lines;
  std::istringstream in(r.output);
  for (std::string l; std::getline(in, l);) lines.push_back(l);
  ASSERT_EQ(lines.size(), 1u) << "expected one error line:\n" << r.output;
  EXPECT_EQ(lines[0].rfind(c.tool + ": error: ", 0), 0u) << lines[0];
  EXPECT_EQ(lines[0].find("[json.exception"), std::string::npos) << "a raw library message: " << lines[0];
  EXPECT_EQ(lines[0].find("internal error"), std::string::npos) << lines[0];
  bool named = false;
  for (const auto& m : c.mentions) named |= lines[0].find(m) != std::string::npos;
  EXPECT_TRUE(named) << "the error does not name " << ::testing::PrintToString(c.mentions) << ": " << lines[0];
  EXPECT_EQ(checksums(W()), before) << "an input of the shared workspace changed";
  EXPECT_EQ(checksums(C), before_case) << "an input of the case changed";
  EXPECT_FALSE(fs::exists(O)) << "output left behind in " << O;
  fs::remove_all(case_dir);
}

std::string case_name(const ::testing::TestParamInfo<Case>& info) {
  std::string n = info.param.name;
  for (char& ch : n)
    if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
  return n + "_" + std::to_string(info.index);
}

INSTANTIATE_TEST_SUITE_P(Corpus, MalformedInput, ::testing::ValuesIn(all_cases()), case_name);

// The corpus must be the size the issue asks for.
TEST(MalformedCorpus, HoldsAtLeast150Cases) {
  EXPECT_GE(all_cases().size(), 150u);
}

// Controls: the same tools on good inputs succeed and write their outputs.
TEST_F(Corpus, GoodInputsSucceed) {
  const fs::path O = g_root / "controls";
  const CmdResult a = run_tool("lcm-sample", "--model " + (W() / "model").string() + " --labels 0,1 --steps 1 --lora " +
                                                 (W() / "pytorch_lora_weights.safetensors").string() + " --out " + (O / "g.png").string() +
                                                 " --latents-out " + (O / "l.safetensors").string());
  EXPECT_EQ(a.status, 0) << a.output;
  EXPECT_TRUE(fs::exists(O / "g.png") && fs::exists(O / "l.safetensors"));
  for (const char* f : {"pytorch_lora_weights.safetensors", "adapter_kohya.safetensors", "adapter.h5"}) {
    const CmdResult b = run_tool("lora-merge", "inspect " + (W() / f).string());
    EXPECT_EQ(b.status, 0) << b.output;
  }
  const CmdResult c = run_tool("lora-merge", "combine " + (O / "m.safetensors").string() + " " +
                                                 (W() / "pytorch_lora_weights.safetensors").string() + ":0.5 " + (W() / "adapter.h5").string());
  EXPECT_EQ(c.status, 0) << c.output;
  const CmdResult d = run_tool("lcm-sample", "--model " + (W() / "model").string() + " --cond " + (W() / "cond.safetensors").string() +
                                                 " --noise " + (W() / "noise.safetensors").string() + " --steps 2 --out-dir " + (O / "pngs").string());
  EXPECT_EQ(d.status, 0) << d.output;
  EXPECT_TRUE(fs::exists(O / "pngs/cond_1.png"));
}

}  // namespace
}  // namespace lcd::testing
