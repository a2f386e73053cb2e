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

const char* kKohyaPrefix = "lora_unet_";

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> parts;
  std::stringstream in(s);
  for (std::string p; std::getline(in, p, sep);) parts.push_back(p);
  return parts;
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// Component names of diffusers' UNet2DConditionModel that contain underscores (others are single tokens).
const std::vector<std::vector<std::string>>& vocabulary() {
  static const std::vector<std::vector<std::string>> words = [] {
    std::vector<std::vector<std::string>> w;
    for (const char* name : {"down_blocks", "up_blocks", "mid_block", "transformer_blocks", "to_q", "to_k", "to_v",
                             "to_out", "proj_in", "proj_out", "conv_shortcut", "time_emb_proj", "conv_in", "conv_out",
                             "conv_norm_out", "time_embedding", "linear_1", "linear_2", "quant_conv", "post_quant_conv"})
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

LoraAdapter read_lora(const std::string& path, bool allow_unmatched, std::vector<std::string>* skipped) {
  if (is_hdf5_path(path)) return read_lora_hdf5(path);
  const std::string config = (std::filesystem::path(path).parent_path() / "adapter_config.json").string();
  return read_lora(SafetensorsFile::read(path), config, allow_unmatched, skipped);
}

LoraAdapter read_lora(const SafetensorsFile& file, const std::string& adapter_config_path, bool allow_unmatched,
                      std::vector<std::string>* skipped) {
  LoraAdapter adapter;
  adapter.metadata = file.metadata();
  // Alpha sources for PEFT keys: metadata, then adapter_config.json, else alpha = r.
  std::optional<double> default_alpha;
  json alpha_pattern = json::object();
  auto absorb_config = [&](const json& c, const std::string& prefix, const std::string& where) {
    if (c.contains(prefix + "lora_alpha")) {
      if (!c[prefix + "lora_alpha"].is_number())
        throw FormatError(where + ": " + prefix + "lora_alpha = " + c[prefix + "lora_alpha"].dump() + " is not a number");
      default_alpha = c[prefix + "lora_alpha"].get<double>();
    }
    if (c.contains(prefix + "alpha_pattern") && c[prefix + "alpha_pattern"].is_object()) {
      alpha_pattern = c[prefix + "alpha_pattern"];
      for (auto it = alpha_pattern.begin(); it != alpha_pattern.end(); ++it)
        if (!it.value().is_number())
          throw FormatError(where + ": " + prefix + "alpha_pattern \"" + it.key() + "\" = " + it.value().dump() +
                            " is not a number");
    }
  };
  if (auto it = adapter.metadata.find("lora_adapter_metadata"); it != adapter.metadata.end()) {
    try {
      absorb_config(json::parse(it->second), "unet.", file.path() + " (lora_adapter_metadata)");
    } catch (const json::exception& e) {
      throw FormatError(file.path() + ": lora_adapter_metadata is not valid JSON (" + json_error_text(e) + ")");
    }
  } else if (std::filesystem::exists(adapter_config_path)) {
    absorb_config(read_json_file(adapter_config_path), "", adapter_config_path);
  }

  struct Pending {
    Tensor down, up;
    std::optional<double> alpha;  // kohya's .alpha
    std::string origin;  // a key, for error messages
  };
  std::map<std::string, Pending> found;
  auto unmatched = [&](const std::string& key) {
    if (!allow_unmatched)
      throw FormatError(file.path() + ": key \"" + key + "\" is not a UNet LoRA tensor lcdkit understands "
                        "(use --allow-unmatched to skip it)");
    if (skipped) skipped->push_back(key);
  };
  // Whole tensors: "unet.<name>" (PEFT/diffusers keys) or the kohya module name with ".diff" (LyCORIS' and
  // ComfyUI's key for a full weight difference).
  auto full_weight_of = [](const std::string& key) -> std::string {
    for (const std::string& name : adapter_full_weight_names()) {
      if (key == "unet." + name) return name;
      const std::string module = name.substr(0, name.rfind('.'));
      if (key == kKohyaPrefix + module_to_kohya_name(module) + ".diff") return name;
    }
    return "";
  };
  for (const std::string& key : file.names()) {
    if (const std::string name = full_weight_of(key); !name.empty()) {
      adapter.full_weights[name] = file.tensor(key);
      continue;
    }
    std::string module, role;
    if (key.rfind(kKohyaPrefix, 0) == 0) {
      const std::string rest = key.substr(std::string(kKohyaPrefix).size());
      for (const char* suffix : {".lora_down.weight", ".lora_up.weight", ".alpha"})
        if (ends_with(rest, suffix)) {
          module = kohya_to_module_name(rest.substr(0, rest.size() - std::string(suffix).size()));
          role = suffix;
        }
    } else {
      std::string rest = key;
      for (const char* prefix : {"unet.", "base_model.model."})
        if (rest.rfind(prefix, 0) == 0) rest = rest.substr(std::string(prefix).size());
      for (const char* suffix : {".lora_A.weight", ".lora_B.weight"})
        if (ends_with(rest, suffix) && key != rest) {
          module = rest.substr(0, rest.size() - std::string(suffix).size());
          role = suffix;
        }
    }
    if (role.empty()) {
      unmatched(key);
      continue;
    }
    Pending& p = found[module];
    p.origin = key;
    adapter.source_style = role == ".lora_A.weight" || role == ".lora_B.weight" ? "peft" : "kohya";
    if (role != ".alpha") adapter.source_dtype = dtype_name(file.entry(key).dtype);
    if (role == ".lora_down.weight" || role == ".lora_A.weight") p.down = file.tensor(key);
    if (role == ".lora_up.weight" || role == ".lora_B.weight") p.up = file.tensor(key);
    if (role == ".alpha") p.alpha = file.scalar(key);
  }
  for (auto& [module, p] : found) {
    if (!p.down.defined() || !p.up.defined())
      throw FormatError(file.path() + ": module \"" + module + "\" has only one of its two LoRA factors (" + p.origin + ")");
    if (p.down.ndim() < 1) throw FormatError(file.path() + ": module \"" + module + "\" has a scalar down factor");
    const int64_t r = p.down.size(0);
    double alpha;
    if (p.alpha) {  // kohya: 0 means alpha = rank, as kohya's LoRAModule
      alpha = *p.alpha == 0 ? static_cast<double>(r) : *p.alpha;
    } else {  // PEFT: pattern, then the file-wide alpha, else alpha = r
      alpha = default_alpha.value_or(static_cast<double>(r));
      for (auto it = alpha_pattern.begin(); it != alpha_pattern.end(); ++it)
        if (module == it.key() || ends_with(module, "." + it.key())) alpha = it.value().get<double>();
    }
    adapter.modules[module] = LoraFactors{p.down, p.up, alpha};
  }
  if (adapter.modules.empty()) throw FormatError(file.path() + ": no LoRA modules found");
  validate_lora_adapter(adapter, file.path());
  return adapter;
}

void write_lora(const std::string& path, const LoraAdapter& adapter, LoraFormat format, DType dtype) {
  if (format == LoraFormat::kHdf5) return write_lora_hdf5(path, adapter);
  std::vector<SafetensorsTensor> tensors;
  std::map<std::string, std::string> metadata = adapter.metadata;
  metadata["format"] = "pt";
  if (format == LoraFormat::kKohya) {
    metadata.erase("lora_adapter_metadata");
    for (const auto& [module, f] : adapter.modules) {
      const std::string base = kKohyaPrefix + module_to_kohya_name(module);
      tensors.push_back({base + ".lora_down.weight", f.down, dtype});
      tensors.push_back({base + ".lora_up.weight", f.up, dtype});
      tensors.push_back({base + ".alpha", Tensor::full({}, static_cast<float>(f.alpha)), dtype});
    }
    for (const auto& [name, t] : adapter.full_weights)
      tensors.push_back({kKohyaPrefix + module_to_kohya_name(name.substr(0, name.rfind('.'))) + ".diff", t, dtype});
  } else {
    // The most common rank and alpha become r and lora_alpha; the rest go to rank_pattern / alpha_pattern.
    std::map<int64_t, int> rank_count;
    std::map<double, int> alpha_count;
    std::set<std::string> targets;
    for (const auto& [module, f] : adapter.modules) {
      rank_count[f.rank()]++;
      alpha_count[f.alpha]++;
      std::string target = split(module, '.').back();
      for (const auto& suffix : default_lora_targets())
        if (ends_with(module, "." + suffix)) target = suffix;
      targets.insert(target);
    }
    auto most = [](const auto& counts) {
      return std::max_element(counts.begin(), counts.end(), [](auto& a, auto& b) { return a.second < b.second; })->first;
    };
    const int64_t r = most(rank_count);
    const double alpha = most(alpha_count);
    json rank_pattern = json::object(), alpha_pattern = json::object();
    for (const auto& [module, f] : adapter.modules) {
      tensors.push_back({"unet." + module + ".lora_A.weight", f.down, dtype});
      tensors.push_back({"unet." + module + ".lora_B.weight", f.up, dtype});
      if (f.rank() != r) rank_pattern[module] = f.rank();
      if (f.alpha != alpha) alpha_pattern[module] = f.alpha;
    }
    for (const auto& [name, t] : adapter.full_weights) tensors.push_back({"unet." + name, t, dtype});
    json meta = {{"unet.r", r},
                 {"unet.lora_alpha", alpha},
                 {"unet.peft_type", "LORA"},
                 {"unet.target_modules", std::vector<std::string>(targets.begin(), targets.end())},
                 {"unet.rank_pattern", rank_pattern},
                 {"unet.alpha_pattern", alpha_pattern}};
    metadata["lora_adapter_metadata"] = meta.dump(2);
  }
  write_safetensors(path, tensors, metadata);
}

}  // namespace lcd
