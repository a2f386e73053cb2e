// Strict state-dict loading and diffusers-layout model directories.
#include "infer/io/model_io.h"

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#include "autograd/errors.h"
#include "autograd/finite.h"
#include "autograd/inference_weights.h"
#include "autograd/storage.h"
#include "infer/lora.h"
#include "infer/nn/layers.h"
#include "infer/nn/config_check.h"

namespace lcd {

namespace fs = std::filesystem;
constexpr const char* kWeightsFile = "diffusion_pytorch_model.safetensors";

void load_state_dict(Module& module, const SafetensorsFile& file, const std::function<void(Tensor&)>& after_each) {
  std::vector<std::string> missing, mismatched;
  std::set<std::string> expected;
  for (auto& [name, t] : module.named_parameters()) {
    expected.insert(name);
    if (!file.contains(name)) {
      missing.push_back(name);
      continue;
    }
    const auto& e = file.entry(name);
    if (Shape(e.shape) != t->shape()) {
      mismatched.push_back(name + " " + Shape(e.shape).str() + " vs model " + t->shape().str());
      continue;
    }
    if (!t->storage()) {  // built shape-only: the parameter gets its storage now
      *t = Tensor::empty(t->shape());
      t->impl()->packable = true;
    }
    file.read_floats(name, t->data());  // straight from the mapped file into the parameter
    file.release(name);                  // and its pages out of resident memory again
    require_finite(*t, file.path() + ": weight \"" + name + "\"");
    if (after_each) after_each(*t);
  }
  std::vector<std::string> unexpected;
  for (const auto& n : file.names())
    if (!expected.count(n)) unexpected.push_back(n);
  if (missing.empty() && unexpected.empty() && mismatched.empty()) return;
  std::string msg = file.path() + ": weights do not match the model:";
  auto list = [&](const char* what, const std::vector<std::string>& names) {
    if (names.empty()) return;
    msg += std::string(" ") + what + " (" + std::to_string(names.size()) + "): ";
    for (size_t i = 0; i < names.size() && i < 8; ++i) msg += (i ? ", " : "") + names[i];
    if (names.size() > 8) msg += ", …";
    msg += ";";
  };
  list("missing", missing);
  list("unexpected", unexpected);
  list("shape mismatch", mismatched);
  throw FormatError(msg);
}

static std::string require_file(const fs::path& p) {
  if (!fs::exists(p)) throw IoError(p.string() + ": not found");
  return p.string();
}

std::unique_ptr<UNet2DConditionModel> load_unet(const std::string& dir) {
  const std::string config_path = require_file(fs::path(dir) / "config.json");
  auto model = std::make_unique<UNet2DConditionModel>(UNetConfig::from_json(read_json_file(config_path), config_path));
  load_state_dict(*model, SafetensorsFile::read(require_file(fs::path(dir) / kWeightsFile)));
  return model;
}

std::unique_ptr<AutoencoderKL> load_autoencoder(const std::string& dir) {
  const std::string config_path = require_file(fs::path(dir) / "config.json");
  auto model = std::make_unique<AutoencoderKL>(AutoencoderConfig::from_json(read_json_file(config_path), config_path));
  load_state_dict(*model, SafetensorsFile::read(require_file(fs::path(dir) / kWeightsFile)));
  return model;
}

namespace {

// f(), with a FormatError's message prefixed by the adapter file it is about.
template <typename F>
auto with_path(const std::string& path, F&& f) {
  try {
    return f();
  } catch (const FormatError& e) {
    throw FormatError(path + ": " + e.what());
  }
}

// Reads `model` (built shape-only) for forward-only use: each parameter is read, the LoRA-layer folds aimed at
// it are added (add_lora_delta), and a linear or convolution weight is kept in its forward form at once and its
// float block handed back, so that one float32 weight at a time is resident beside the kept forms.
void load_for_inference(Module& model, const SafetensorsFile& file, const std::vector<FoldedAdapter>& adapters) {
  std::map<const Tensor*, std::vector<std::pair<const LoraFactors*, double>>> folds;
  for (const FoldedAdapter& a : adapters)
    for (const auto& [w, f] : with_path(a.path, [&] { return lora_layer_folds(model, *a.adapter); }))
      folds[w].emplace_back(f, a.weight);
  std::set<const Tensor*> kept;
  for (auto& [name, m] : model.named_modules())
    if (const LoraLayer* layer = m->lora_layer(); layer && layer->lora.empty()) kept.insert(&layer->weight);
  load_state_dict(model, file, [&](Tensor& t) {
    if (auto it = folds.find(&t); it != folds.end())
      for (const auto& [f, weight] : it->second) add_lora_delta(t, *f, weight);
    if (kept.count(&t)) {
      keep_forward_form_only(t);
      release_cached_storage();
    }
  });
}

}  // namespace

std::unique_ptr<UNet2DConditionModel> load_unet_for_inference(const std::string& dir,
                                                              const std::vector<FoldedAdapter>& adapters) {
  const std::string config_path = require_file(fs::path(dir) / "config.json");
  const UNetConfig config = UNetConfig::from_json(read_json_file(config_path), config_path);
  std::unique_ptr<UNet2DConditionModel> model;
  {
    ShapeOnlyGuard shapes_only;
    model = std::make_unique<UNet2DConditionModel>(config);
  }
  load_for_inference(*model, SafetensorsFile::read(require_file(fs::path(dir) / kWeightsFile)), adapters);
  for (const FoldedAdapter& a : adapters) {  // a guidance embedding's whole tensors, then its layers kept
    prepare_unet_for(*model, *a.adapter);
    with_path(a.path, [&] { merge_full_weights(*model, *a.adapter, a.weight); return 0; });
  }
  keep_forward_forms_only(*model);
  return model;
}

std::unique_ptr<AutoencoderKL> load_autoencoder_for_inference(const std::string& dir) {
  const std::string config_path = require_file(fs::path(dir) / "config.json");
  const AutoencoderConfig config = AutoencoderConfig::from_json(read_json_file(config_path), config_path);
  std::unique_ptr<AutoencoderKL> model;
  {
    ShapeOnlyGuard shapes_only;
    model = std::make_unique<AutoencoderKL>(config);
  }
  load_for_inference(*model, SafetensorsFile::read(require_file(fs::path(dir) / kWeightsFile)), {});
  return model;
}

void save_module(const Module& module, const nlohmann::json& config, const std::string& dir, DType dtype) {
  fs::create_directories(dir);
  std::vector<SafetensorsTensor> tensors;
  for (const auto& [name, t] : module.named_parameters()) tensors.push_back({name, *t, dtype});
  write_safetensors((fs::path(dir) / kWeightsFile).string(), tensors, {{"format", "pt"}});
  write_file_atomically((fs::path(dir) / "config.json").string(), config.dump(2) + "\n");
}

std::string weights_hash(const Module& module) {
  uint64_t h = 1469598103934665603ull;
  auto mix = [&](const void* data, size_t n) {
    const auto* p = static_cast<const unsigned char*>(data);
    for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 1099511628211ull;
  };
  for (const auto& [name, t] : module.named_parameters()) {
    mix(name.data(), name.size());
    const auto dims = t->shape().to_vector();
    mix(dims.data(), dims.size() * sizeof(int64_t));
    mix(t->data(), sizeof(float) * t->numel());
  }
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(h));
  return hex;
}

std::vector<std::string> load_class_names(const std::string& model_dir, int64_t classes) {
  const fs::path path = fs::path(model_dir) / "labels.json";
  if (!fs::exists(path)) return {};
  std::ifstream in(path);
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    throw FormatError(path.string() + ": not valid JSON (" + json_error_text(e) + ")");
  }
  std::vector<std::string> names;
  if (!j.is_array() || static_cast<int64_t>(j.size()) != classes)
    throw FormatError(path.string() + ": must be a list of " + std::to_string(classes) + " class names (one per row of "
                      "cond_embeddings but the unconditional one)");
  for (size_t i = 0; i < j.size(); ++i) {
    if (!j[i].is_string() || j[i].get<std::string>().empty())
      throw FormatError(path.string() + ": entry " + std::to_string(i) + " is not a non-empty string");
    names.push_back(j[i].get<std::string>());
  }
  return names;
}

Tensor load_cond_embeddings(const std::string& model_dir, int64_t condition_dim) {
  const std::string path = require_file(fs::path(model_dir) / "cond_embeddings.safetensors");
  SafetensorsFile f = SafetensorsFile::read(path);
  if (!f.contains("cond_embeddings")) throw FormatError(path + ": no tensor \"cond_embeddings\"");
  Tensor t = f.tensor("cond_embeddings");
  if (t.ndim() != 3 || t.size(0) < 2 || t.size(1) < 1 || t.size(2) < 1)
    throw FormatError(path + ": cond_embeddings must be (classes+1, L, D) with at least one class, got " + t.shape().str());
  require_finite(t, path + ": cond_embeddings");
  if (condition_dim > 0 && t.size(2) != condition_dim)
    throw FormatError(path + ": cond_embeddings " + t.shape().str() + " do not fit the UNet's cross_attention_dim " +
                      std::to_string(condition_dim));
  return t;
}

}  // namespace lcd
