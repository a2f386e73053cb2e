// LoRA file formats (see lora_io.h).
#include "infer/io/lora_io.h"

#include <filesystem>
#include <algorithm>
#include <map>
#include <optional>
#include <set>
#include <nlohmann/json.hpp>
#include <sstream>

#include "autograd/atomic_file.h"
#include "autograd/errors.h"
#include "datasets/hdf5.h"
#include "infer/nn/config_check.h"

namespace lcd {

using json = nlohmann::json;

namespace {

// ---- the key tables ----

// Where a module lives, by key prefix: kohya's prefixes and the diffusers/PEFT ones. UNet modules have no
// prefix in canonical names; text-encoder modules keep theirs (infer/lora.h).
struct ComponentPrefix {
  const char* key_prefix;
  const char* module_prefix;
  bool kohya;
};
const ComponentPrefix kComponentPrefixes[] = {
    {"lora_unet_", "", true},
    {"lora_te_", "text_encoder.", true},    // SD 1.x / 2.x: the one text encoder
    {"lora_te1_", "text_encoder.", true},   // SDXL: CLIP ViT-L
    {"lora_te2_", "text_encoder_2.", true}, // SDXL: OpenCLIP ViT-bigG
    {"unet.", "", false},                   // diffusers
    {"base_model.model.", "", false},       // PEFT
    {"text_encoder.", "text_encoder.", false},
    {"text_encoder_2.", "text_encoder_2.", false},
};

// What a key's suffix says it holds.
enum class Role { kDown, kUp, kAlpha };
struct RoleSuffix {
  const char* suffix;
  Role role;
  bool kohya;
};
const RoleSuffix kRoleSuffixes[] = {
    {".lora_down.weight", Role::kDown, true}, {".lora_up.weight", Role::kUp, true}, {".alpha", Role::kAlpha, true},
    {".lora_A.weight", Role::kDown, false},   {".lora_B.weight", Role::kUp, false},
};

// Module kinds lcdkit does not compute: a key containing `marker` makes the whole file an error, whatever
// --allow-unmatched says, since reading the plain-LoRA part of such a module gives another ΔW.
struct UnsupportedKind {
  const char* marker;
  const char* kind;
};
const UnsupportedKind kUnsupportedKinds[] = {
    {".lora_mid.", "a LyCORIS LoCon module with a Tucker core (lora_mid)"},
    {".hada_", "a LyCORIS LoHa module (hada_*)"},
    {".lokr_", "a LyCORIS LoKr module (lokr_*)"},
    {".oft_", "an OFT module (oft_*)"},
    {".dora_scale", "a DoRA module (dora_scale)"},
    {"lora_magnitude_vector", "a DoRA module (lora_magnitude_vector)"},
};

// The original Stable Diffusion (SGM / ldm) UNet names that kohya's SDXL files use instead of diffusers' names.
const char* const kSgmBlocks[] = {"input_blocks_", "middle_block_", "output_blocks_", "time_embed_", "label_emb_", "out_"};

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> parts;
  std::stringstream in(s);
  for (std::string p; std::getline(in, p, sep);) parts.push_back(p);
  return parts;
}

bool starts_with(const std::string& s, const std::string& prefix) { return s.rfind(prefix, 0) == 0; }

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// Component names of diffusers' UNet2DConditionModel and transformers' CLIPTextModel that contain underscores
// (others are single tokens).
const std::vector<std::vector<std::string>>& vocabulary() {
  static const std::vector<std::vector<std::string>> words = [] {
    std::vector<std::vector<std::string>> w;
    for (const char* name : {"down_blocks", "up_blocks", "mid_block", "transformer_blocks", "to_q", "to_k", "to_v",
                             "to_out", "proj_in", "proj_out", "conv_shortcut", "time_emb_proj", "conv_in", "conv_out",
                             "conv_norm_out", "time_embedding", "linear_1", "linear_2", "quant_conv", "post_quant_conv",
                             "cond_proj", "add_embedding", "text_model", "self_attn", "q_proj", "k_proj", "v_proj",
                             "out_proj", "final_layer_norm", "layer_norm1", "layer_norm2", "token_embedding",
                             "position_embedding", "text_projection"})
      w.push_back(split(name, '_'));
    return w;
  }();
  return words;
}

}  // namespace

std::string kohya_to_module_name(const std::string& kohya) {
  const std::vector<std::string> tokens = split(kohya, '_');
  std::vector<std::string> parts;
  for (size_t i = 0; i < tokens.size();) {
    size_t best = 0;
    for (const auto& word : vocabulary())
      if (word.size() > best && i + word.size() <= tokens.size() &&
          std::equal(word.begin(), word.end(), tokens.begin() + i))
        best = word.size();
    if (best == 0) best = 1;  // a single-token component: "attentions", "0", "attn1", "ff", "net", "proj", …
    std::string part = tokens[i];
    for (size_t k = 1; k < best; ++k) part += "_" + tokens[i + k];
    if (part.empty()) throw FormatError("cannot parse kohya module name \"" + kohya + "\"");
    parts.push_back(part);
    i += best;
  }
  std::string out;
  for (const auto& p : parts) out += (out.empty() ? "" : ".") + p;
  return out;
}

std::string module_to_kohya_name(const std::string& module) {
  std::string s = module;
  std::replace(s.begin(), s.end(), '.', '_');
  return s;
}

static bool is_hdf5_path(const std::string& path) {
  return ends_with(path, ".h5") || ends_with(path, ".hdf5");
}

static LoraAdapter read_lora_hdf5(const std::string& path) {
  Hdf5File f = Hdf5File::open(path);
  if (!f.exists("/lora")) throw FormatError(path + ": no /lora group (not an lcdkit adapter export)");
  LoraAdapter a;
  a.source_style = "hdf5";
  if (f.exists("/weights"))
    for (const std::string& name : f.members("/weights")) a.full_weights[name] = f.read_tensor("/weights/" + name);
  for (const std::string& module : f.members("/lora")) {
    const std::string g = "/lora/" + module;
    if (!f.exists(g + "/A") || !f.exists(g + "/B") || !f.has_attribute(g, "alpha"))
      throw FormatError(path + ": " + g + " needs datasets A and B and an alpha attribute");
    a.modules[module] = LoraFactors{f.read_tensor(g + "/A"), f.read_tensor(g + "/B"), f.double_attribute(g, "alpha")};
  }
  if (a.modules.empty()) throw FormatError(path + ": no LoRA modules found");
  validate_lora_adapter(a, path);
  return a;
}

static void write_lora_hdf5(const std::string& path, const LoraAdapter& adapter) {
  write_through_temp_file(path, [&](const std::string& tmp) {
    Hdf5File f = Hdf5File::create(tmp);
    f.create_group("/lora");
    for (const auto& [module, fac] : adapter.modules) {
      const std::string g = "/lora/" + module;
      f.create_group(g);
      f.write(g + "/A", fac.down);
      f.write(g + "/B", fac.up);
      f.set_attribute(g, "alpha", fac.alpha);
    }
    for (const auto& [k, v] : adapter.metadata) f.set_attribute("/lora", k, v);
    if (!adapter.full_weights.empty()) f.create_group("/weights");
    for (const auto& [name, t] : adapter.full_weights) f.write("/weights/" + name, t);
  });
}

std::string resolve_adapter_path(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::is_directory(path, ec)) return path;
  for (const char* name : {"adapter_model.safetensors", "pytorch_lora_weights.safetensors"})
    if (fs::exists(fs::path(path) / name, ec)) return (fs::path(path) / name).string();
  throw FormatError(path + ": a folder without adapter_model.safetensors (PEFT) or pytorch_lora_weights.safetensors "
                    "(diffusers)");
}

LoraAdapter read_lora(const std::string& given_path, bool allow_unmatched, std::vector<std::string>* skipped) {
  const std::string path = resolve_adapter_path(given_path);
  if (is_hdf5_path(path)) return read_lora_hdf5(path);
  const std::string config = (std::filesystem::path(path).parent_path() / "adapter_config.json").string();
  return read_lora(SafetensorsFile::read(path), config, allow_unmatched, skipped);
}

namespace {

// Alpha for diffusers/PEFT keys, per component: <component>.lora_alpha and .alpha_pattern from the file's
// lora_adapter_metadata, else lora_alpha / alpha_pattern of an adapter_config.json (PEFT), else alpha = r.
struct AlphaSource {
  std::optional<double> alpha;
  json pattern = json::object();
};

void absorb_alpha(const json& c, const std::string& prefix, const std::string& where, AlphaSource* out) {
  if (c.contains(prefix + "lora_alpha")) {
    if (!c[prefix + "lora_alpha"].is_number())
      throw FormatError(where + ": " + prefix + "lora_alpha = " + c[prefix + "lora_alpha"].dump() + " is not a number");
    out->alpha = c[prefix + "lora_alpha"].get<double>();
  }
  if (c.contains(prefix + "alpha_pattern") && c[prefix + "alpha_pattern"].is_object()) {
    out->pattern = c[prefix + "alpha_pattern"];
    for (auto it = out->pattern.begin(); it != out->pattern.end(); ++it)
      if (!it.value().is_number())
        throw FormatError(where + ": " + prefix + "alpha_pattern \"" + it.key() + "\" = " + it.value().dump() +
                          " is not a number");
  }
}

// A key split into its module (canonical name), role and style, by the tables above; role empty: not a LoRA key.
struct ParsedKey {
  std::string module;
  std::optional<Role> role;
  bool kohya = false;
};

ParsedKey parse_key(const std::string& key, const std::string& path) {
  for (const auto& u : kUnsupportedKinds)
    if (key.find(u.marker) != std::string::npos)
      throw FormatError(path + ": key \"" + key + "\" belongs to " + u.kind + "; lcdkit reads plain LoRA modules " +
                        "only and will not read part of one");
  ParsedKey out;
  for (const auto& c : kComponentPrefixes) {
    if (!starts_with(key, c.key_prefix)) continue;
    const std::string rest = key.substr(std::string(c.key_prefix).size());
    for (const auto& r : kRoleSuffixes) {
      if (r.kohya != c.kohya || !ends_with(rest, r.suffix)) continue;
      const std::string name = rest.substr(0, rest.size() - std::string(r.suffix).size());
      if (c.kohya && c.module_prefix[0] == '\0')  // a kohya UNet key
        for (const char* sgm : kSgmBlocks)
          if (starts_with(name, sgm))
            throw FormatError(path + ": key \"" + key + "\" uses the original Stable Diffusion (SGM) block names of " +
                              "kohya's SDXL files; lcdkit reads diffusers module names (lora_unet_down_blocks_...): " +
                              "convert the file with diffusers' or ComfyUI's LoRA converter first");
      out.module = c.module_prefix + (c.kohya ? kohya_to_module_name(name) : name);
      out.role = r.role;
      out.kohya = c.kohya;
      return out;
    }
  }
  return out;
}

}  // namespace

LoraAdapter read_lora(const SafetensorsFile& file, const std::string& adapter_config_path, bool allow_unmatched,
                      std::vector<std::string>* skipped) {
  LoraAdapter adapter;
  adapter.metadata = file.metadata();
  std::map<std::string, AlphaSource> alpha_of;  // component prefix → its alpha source
  if (auto it = adapter.metadata.find("lora_adapter_metadata"); it != adapter.metadata.end()) {
    json meta;
    try {
      meta = json::parse(it->second);
    } catch (const json::exception& e) {
      throw FormatError(file.path() + ": lora_adapter_metadata is not valid JSON (" + json_error_text(e) + ")");
    }
    for (const char* c : {"", "text_encoder.", "text_encoder_2."})
      absorb_alpha(meta, c[0] ? c : "unet.", file.path() + " (lora_adapter_metadata)", &alpha_of[c]);
  } else if (std::filesystem::exists(adapter_config_path)) {
    absorb_alpha(read_json_file(adapter_config_path), "", adapter_config_path, &alpha_of[""]);
  }

  struct Pending {
    Tensor down, up;
    std::optional<double> alpha;  // kohya's .alpha
    std::string origin;  // a key, for error messages
  };
  std::map<std::string, Pending> found;
  auto unmatched = [&](const std::string& key) {
    if (!allow_unmatched)
      throw FormatError(file.path() + ": key \"" + key + "\" is not a LoRA tensor lcdkit understands "
                        "(use --allow-unmatched to skip it)");
    if (skipped) skipped->push_back(key);
  };
  // Whole tensors: "unet.<name>" / "base_model.model.<name>" (diffusers/PEFT keys) or the kohya module name with
  // ".diff" (LyCORIS' and ComfyUI's key for a full weight difference).
  auto full_weight_of = [](const std::string& key) -> std::string {
    for (const std::string& name : adapter_full_weight_names()) {
      if (key == "unet." + name || key == "base_model.model." + name) return name;
      const std::string module = name.substr(0, name.rfind('.'));
      if (key == "lora_unet_" + module_to_kohya_name(module) + ".diff") return name;
    }
    return "";
  };
  for (const std::string& key : file.names()) {
    if (const std::string name = full_weight_of(key); !name.empty()) {
      adapter.full_weights[name] = file.tensor(key);
      continue;
    }
    const ParsedKey k = parse_key(key, file.path());
    if (!k.role) {
      unmatched(key);
      continue;
    }
    Pending& p = found[k.module];
    p.origin = key;
    adapter.source_style = k.kohya ? "kohya" : starts_with(key, "base_model.model.") ? "peft" : "diffusers";
    if (*k.role != Role::kAlpha) adapter.source_dtype = dtype_name(file.entry(key).dtype);
    if (*k.role == Role::kDown) p.down = file.tensor(key);
    if (*k.role == Role::kUp) p.up = file.tensor(key);
    if (*k.role == Role::kAlpha) p.alpha = file.scalar(key);
  }
  for (auto& [module, p] : found) {
    if (!p.down.defined() || !p.up.defined())
      throw FormatError(file.path() + ": module \"" + module + "\" has only one of its two LoRA factors (" + p.origin + ")");
    if (p.down.ndim() < 1) throw FormatError(file.path() + ": module \"" + module + "\" has a scalar down factor");
    const int64_t r = p.down.size(0);
    double alpha;
    if (p.alpha) {  // kohya: 0 means alpha = rank, as kohya's LoRAModule
      alpha = *p.alpha == 0 ? static_cast<double>(r) : *p.alpha;
    } else {  // diffusers/PEFT: pattern, then the component's alpha, else alpha = r
      const std::string component = component_of(module);
      const AlphaSource& src = alpha_of[component];
      const std::string local = module.substr(component.size());
      alpha = src.alpha.value_or(static_cast<double>(r));
      for (auto it = src.pattern.begin(); it != src.pattern.end(); ++it)
        if (local == it.key() || ends_with(local, "." + it.key())) alpha = it.value().get<double>();
    }
    adapter.modules[module] = LoraFactors{p.down, p.up, alpha};
  }
  if (adapter.modules.empty()) throw FormatError(file.path() + ": no LoRA modules found");
  validate_lora_adapter(adapter, file.path());
  return adapter;
}

namespace {

template <typename Count>
auto most_common(const Count& counts) {
  return std::max_element(counts.begin(), counts.end(), [](auto& a, auto& b) { return a.second < b.second; })->first;
}

std::string number_text(double v) {
  std::ostringstream o;
  o << v;
  return o.str();
}

// The LoRA settings of one component's modules as PEFT records them: the most common rank and alpha, the
// modules that differ, and the target suffixes.
json peft_settings(const LoraAdapter& adapter, const std::string& component) {
  std::map<int64_t, int> rank_count;
  std::map<double, int> alpha_count;
  std::set<std::string> targets;
  for (const auto& [module, f] : adapter.modules) {
    if (component_of(module) != component) continue;
    rank_count[f.rank()]++;
    alpha_count[f.alpha]++;
    const std::string local = module.substr(component.size());
    std::string target = split(local, '.').back();
    for (const auto& suffix : default_lora_targets())
      if (ends_with(local, "." + suffix)) target = suffix;
    targets.insert(target);
  }
  if (rank_count.empty()) return json();
  const int64_t r = most_common(rank_count);
  const double alpha = most_common(alpha_count);
  json rank_pattern = json::object(), alpha_pattern = json::object();
  for (const auto& [module, f] : adapter.modules) {
    if (component_of(module) != component) continue;
    const std::string local = module.substr(component.size());
    if (f.rank() != r) rank_pattern[local] = f.rank();
    if (f.alpha != alpha) alpha_pattern[local] = f.alpha;
  }
  return {{"r", r}, {"lora_alpha", alpha}, {"target_modules", std::vector<std::string>(targets.begin(), targets.end())},
          {"rank_pattern", rank_pattern}, {"alpha_pattern", alpha_pattern}};
}

// The metadata every safetensors export starts from: the adapter's own, less what described the file it was
// read from (kohya's ss_* and modelspec.* keys, diffusers' lora_adapter_metadata), which the writers recompute.
std::map<std::string, std::string> carried_metadata(const LoraAdapter& adapter) {
  std::map<std::string, std::string> m;
  for (const auto& [k, v] : adapter.metadata)
    if (!starts_with(k, "ss_") && !starts_with(k, "modelspec.") && k != "lora_adapter_metadata") m[k] = v;
  m["format"] = "pt";
  return m;
}

// kohya's and the Stability model-spec keys that A1111, ComfyUI and kohya's tools read, for what the file
// holds now (ranks and alphas after a combine or a re-rank), never copied from an input.
void add_kohya_metadata(const LoraAdapter& adapter, const std::string& path, std::map<std::string, std::string>* m) {
  std::map<int64_t, int> rank_count, conv_rank_count;
  std::map<double, int> alpha_count, conv_alpha_count;
  for (const auto& [module, f] : adapter.modules) {
    const bool conv3 = f.is_conv() && (f.down.size(2) > 1 || f.down.size(3) > 1);  // kohya's conv_dim modules
    (conv3 ? conv_rank_count : rank_count)[f.rank()]++;
    (conv3 ? conv_alpha_count : alpha_count)[f.alpha]++;
  }
  if (rank_count.empty()) {  // only 3×3 convolutions
    rank_count = conv_rank_count;
    alpha_count = conv_alpha_count;
  }
  (*m)["ss_network_module"] = "networks.lora";
  (*m)["ss_network_dim"] = std::to_string(most_common(rank_count));
  (*m)["ss_network_alpha"] = number_text(most_common(alpha_count));
  if (!conv_rank_count.empty())
    (*m)["ss_network_args"] = json{{"conv_dim", std::to_string(most_common(conv_rank_count))},
                                   {"conv_alpha", number_text(most_common(conv_alpha_count))}}.dump();
  std::string base = "unknown";
  if (auto it = adapter.metadata.find("ss_base_model_version"); it != adapter.metadata.end()) base = it->second;
  if (auto it = adapter.metadata.find("lcdkit.base_model_version"); it != adapter.metadata.end()) base = it->second;
  (*m)["ss_base_model_version"] = base;
  const std::map<std::string, std::string> architectures = {{"sd_v1", "stable-diffusion-v1"},
                                                            {"sd_v2", "stable-diffusion-v2-768-v"},
                                                            {"sdxl_base_v1-0", "stable-diffusion-xl-v1-base"}};
  auto arch = architectures.find(base);
  (*m)["modelspec.sai_model_spec"] = "1.0.0";
  (*m)["modelspec.architecture"] = (arch != architectures.end() ? arch->second : "lcdkit/" + base) + "/lora";
  (*m)["modelspec.implementation"] = arch != architectures.end() ? "diffusers" : "lcdkit";
  (*m)["modelspec.title"] = std::filesystem::path(path).stem().string();
}

std::string kohya_key_prefix(const std::string& module, bool sdxl_text_encoders) {
  const std::string component = component_of(module);
  if (component.empty()) return "lora_unet_";
  if (component == "text_encoder_2.") return "lora_te2_";
  return sdxl_text_encoders ? "lora_te1_" : "lora_te_";
}

void write_kohya(const std::string& path, const LoraAdapter& adapter, DType dtype) {
  std::vector<SafetensorsTensor> tensors;
  std::map<std::string, std::string> metadata = carried_metadata(adapter);
  add_kohya_metadata(adapter, path, &metadata);
  bool sdxl = false;  // two text encoders: lora_te1_ / lora_te2_, else SD 1.x/2.x's lora_te_
  for (const auto& [module, f] : adapter.modules) sdxl = sdxl || component_of(module) == "text_encoder_2.";
  for (const auto& [module, f] : adapter.modules) {
    const std::string base = kohya_key_prefix(module, sdxl) + module_to_kohya_name(module.substr(component_of(module).size()));
    tensors.push_back({base + ".lora_down.weight", f.down, dtype});
    tensors.push_back({base + ".lora_up.weight", f.up, dtype});
    tensors.push_back({base + ".alpha", Tensor::full({}, static_cast<float>(f.alpha)), dtype});
  }
  for (const auto& [name, t] : adapter.full_weights)
    tensors.push_back({"lora_unet_" + module_to_kohya_name(name.substr(0, name.rfind('.'))) + ".diff", t, dtype});
  write_safetensors(path, tensors, metadata);
}

void write_diffusers(const std::string& path, const LoraAdapter& adapter, DType dtype) {
  std::vector<SafetensorsTensor> tensors;
  std::map<std::string, std::string> metadata = carried_metadata(adapter);
  json meta = json::object();
  for (const char* component : {"", "text_encoder.", "text_encoder_2."}) {
    const json settings = peft_settings(adapter, component);
    if (settings.is_null()) continue;
    const std::string prefix = component[0] ? component : "unet.";
    for (auto it = settings.begin(); it != settings.end(); ++it) meta[prefix + it.key()] = it.value();
    meta[prefix + "peft_type"] = "LORA";
  }
  for (const auto& [module, f] : adapter.modules) {
    const std::string key = component_of(module).empty() ? "unet." + module : module;
    tensors.push_back({key + ".lora_A.weight", f.down, dtype});
    tensors.push_back({key + ".lora_B.weight", f.up, dtype});
  }
  for (const auto& [name, t] : adapter.full_weights) tensors.push_back({"unet." + name, t, dtype});
  metadata["lora_adapter_metadata"] = meta.dump(2);
  write_safetensors(path, tensors, metadata);
}

// PEFT proper: what PeftModel.from_pretrained(unet, folder) loads — adapter_model.safetensors with
// base_model.model.<module> keys (PEFT's get_peft_model_state_dict with the adapter name removed) and an
// adapter_config.json with every LoraConfig field.
void write_peft_folder(const std::string& folder, const LoraAdapter& adapter, DType dtype) {
  for (const auto& [module, f] : adapter.modules)
    if (!component_of(module).empty())
      throw FormatError(folder + ": a PEFT adapter wraps one model, and this adapter has text-encoder modules (" +
                        module + "); write it as diffusers or kohya instead");
  std::vector<SafetensorsTensor> tensors;
  for (const auto& [module, f] : adapter.modules) {
    tensors.push_back({"base_model.model." + module + ".lora_A.weight", f.down, dtype});
    tensors.push_back({"base_model.model." + module + ".lora_B.weight", f.up, dtype});
  }
  std::vector<std::string> modules_to_save;
  for (const auto& [name, t] : adapter.full_weights) {  // whole tensors are PEFT's modules_to_save
    tensors.push_back({"base_model.model." + name, t, dtype});
    modules_to_save.push_back(name.substr(0, name.rfind('.')));
  }
  json config = peft_settings(adapter, "");
  std::string base;
  if (auto it = adapter.metadata.find("lcdkit.base_model"); it != adapter.metadata.end()) base = it->second;
  config.update({{"peft_type", "LORA"}, {"task_type", nullptr}, {"base_model_name_or_path", base}, {"revision", nullptr},
                 {"bias", "none"}, {"lora_dropout", 0.0}, {"fan_in_fan_out", false}, {"init_lora_weights", true},
                 {"inference_mode", true}, {"use_rslora", false}, {"use_dora", false}, {"layers_to_transform", nullptr},
                 {"layers_pattern", nullptr}, {"auto_mapping", nullptr},
                 {"modules_to_save", modules_to_save.empty() ? json(nullptr) : json(modules_to_save)}});
  std::filesystem::create_directories(folder);
  write_safetensors((std::filesystem::path(folder) / "adapter_model.safetensors").string(), tensors, carried_metadata(adapter));
  write_file_atomically((std::filesystem::path(folder) / "adapter_config.json").string(), config.dump(2) + "\n");
}

}  // namespace

void write_lora(const std::string& path, const LoraAdapter& adapter, LoraFormat format, DType dtype) {
  switch (format) {
    case LoraFormat::kHdf5: return write_lora_hdf5(path, adapter);
    case LoraFormat::kKohya: return write_kohya(path, adapter, dtype);
    case LoraFormat::kDiffusers: return write_diffusers(path, adapter, dtype);
    case LoraFormat::kPeft: return write_peft_folder(path, adapter, dtype);
  }
}

std::string kohya_base_model_version(const UNetConfig& c) {
  const std::vector<int64_t> sd = {320, 640, 1280, 1280}, sdxl = {320, 640, 1280};
  if (c.block_out_channels == sd && c.cross_attention_dim == 768) return "sd_v1";
  if (c.block_out_channels == sd && c.cross_attention_dim == 1024) return "sd_v2";
  if (c.block_out_channels == sdxl && c.cross_attention_dim == 2048) return "sdxl_base_v1-0";
  return "";
}

}  // namespace lcd
