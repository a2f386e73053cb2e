// lcd-train configuration: defaults, documentation and validation (see config.h).
#include "train/config.h"

#include <filesystem>
#include <functional>
#include <limits>
#include <map>
#include <sstream>

#include "autograd/errors.h"
#include "datasets/style.h"
#include "infer/nn/config_check.h"
#include "train/objective.h"

namespace lcd {

using json = nlohmann::json;

namespace {

// A check returns "" for a valid value, else why it is not ("must be 1..4096").
using Check = std::function<std::string(const json&)>;
using Store = std::function<void(TrainConfig&, const json&)>;

// One row per key: the dotted key, its default (whose JSON kind is the key's type), its meaning, its check and
// the field it fills. Lists name their element kind.
struct KeySpec {
  std::string key;
  json default_value;
  std::string doc;
  Check check;
  Store store;
  json element = nullptr;  // lists: an example element of the right kind
};

Check any() {
  return [](const json&) { return std::string(); };
}
Check int_range(int64_t lo, int64_t hi) {
  return [=](const json& v) {
    const int64_t x = v.get<int64_t>();
    return x >= lo && x <= hi ? std::string() : "must be " + std::to_string(lo) + ".." + std::to_string(hi);
  };
}
Check at_least(double lo, bool strict = false) {
  return [=](const json& v) {
    const double x = v.get<double>();
    char why[64];
    std::snprintf(why, sizeof why, "must be %s %g", strict ? ">" : "≥", lo);
    return (strict ? x > lo : x >= lo) ? std::string() : std::string(why);
  };
}
Check in_unit(bool closed_above) {
  return [=](const json& v) {
    const double x = v.get<double>();
    return x >= 0 && (closed_above ? x <= 1 : x < 1) ? std::string() : closed_above ? "must be in [0, 1]" : "must be in [0, 1)";
  };
}
Check one_of(std::vector<std::string> names) {
  return [=](const json& v) {
    for (const auto& n : names)
      if (v.get<std::string>() == n) return std::string();
    std::string list;
    for (size_t i = 0; i < names.size(); ++i)
      list += std::string(i == 0 ? "" : i + 1 == names.size() ? " or " : ", ") + "\"" + names[i] + "\"";
    return "must be " + list;
  };
}
Check each_int(int64_t lo, int64_t hi) {
  return [=](const json& v) {
    for (const json& x : v)
      if (x.get<int64_t>() < lo || x.get<int64_t>() > hi) return "each must be " + std::to_string(lo) + ".." + std::to_string(hi);
    return std::string();
  };
}

template <typename T>
Store into(T TrainConfig::*field) {
  return [=](TrainConfig& c, const json& v) { c.*field = v.get<T>(); };
}

const std::vector<KeySpec>& config_keys() {
  static const std::vector<KeySpec> keys = [] {
    std::vector<std::string> objectives;
    for (const ObjectiveSpec& o : objective_table()) objectives.push_back(o.name);
    std::string objective_doc;
    for (const ObjectiveSpec& o : objective_table()) objective_doc += std::string(objective_doc.empty() ? "" : "; ") + "\"" + o.name + "\": " + o.doc;
    return std::vector<KeySpec>{
        {"objective", "lcd", objective_doc, one_of(objectives), into(&TrainConfig::objective)},
        {"model", "models/fmnist-ldm-v1", "teacher model directory in diffusers layout (unet/, vae/, scheduler/, cond_embeddings.safetensors)",
         any(), into(&TrainConfig::model_dir)},
        {"output_dir", "runs/lcm-lora", "run directory: config, checkpoints, metrics.jsonl, samples/, final adapters",
         [](const json& v) { return v.get<std::string>().empty() ? "must not be empty" : ""; }, into(&TrainConfig::output_dir)},
        {"seed", 0, "seed of every random draw (data order, noise, timesteps, guidance, LoRA init)", at_least(0),
         [](TrainConfig& c, const json& v) { c.seed = v.get<uint64_t>(); }},
        {"threads", 0, "threads for OpenMP and GEMMs (0: all cores; --threads overrides)", int_range(0, 4096), into(&TrainConfig::threads)},

        {"data.source", "fashion-mnist", "\"fashion-mnist\" (idx files) or \"folder\" (PNG images, see datasets/image_folder.h)",
         one_of({"fashion-mnist", "folder"}), into(&TrainConfig::data_source)},
        {"data.path", "/usr/share/datasets/fashion-mnist", "folder of the idx files or of the images", any(), into(&TrainConfig::data_path)},
        {"data.split", "train", "\"train\" or \"test\" (fashion-mnist)", one_of({"train", "test"}), into(&TrainConfig::data_split)},
        {"data.labels_file", "", "folder source: labels file instead of class sub-folders", any(), into(&TrainConfig::labels_file)},
        {"data.limit", -1, "use only the first N images (-1: all)",
         [](const json& v) { return v.get<int64_t>() == 0 || v.get<int64_t>() < -1 ? "must be -1 (all) or positive" : ""; },
         into(&TrainConfig::data_limit)},
        {"data.style", "", "restyle the images before encoding: \"\" (none), \"invert\" or \"thicken\" (datasets/style.h)",
         [](const json& v) { return is_known_style(v.get<std::string>()) ? "" : "must be \"\", \"invert\" or \"thicken\""; },
         into(&TrainConfig::data_style)},
        {"data.latent_cache", "", "HDF5 latent cache (default: <output_dir>/../latents-<source>-<split>.h5); rebuilt when stale", any(),
         into(&TrainConfig::latent_cache)},
        {"data.encode_batch", 256, "images per autoencoder pass when building the cache", int_range(1, 65536),
         into(&TrainConfig::encode_batch)},
        {"data.sample_posterior", false, "train on z ~ N(mean, exp(logvar)) instead of the posterior mean", any(),
         into(&TrainConfig::sample_posterior)},

        {"lora.enabled", true, "train a LoRA adapter (false: the whole UNet, objective diffusion only)", any(),
         into(&TrainConfig::lora_enabled)},
        {"lora.rank", 16, "LoRA rank r (with lora.init_adapter, that adapter's rank)", int_range(1, 4096), [](TrainConfig& c, const json& v) { c.lora.rank = v; }},
        {"lora.alpha", 16.0, "LoRA alpha; the scale is alpha / r (with lora.init_adapter, that adapter's)", at_least(0, true), [](TrainConfig& c, const json& v) { c.lora.alpha = v; }},
        {"lora.targets", json::array(), "module-name suffixes to adapt ([]: diffusers' LCM-LoRA list, DESIGN.md §5)",
         [](const json& v) {
           for (const json& t : v)
             if (t.get<std::string>().empty()) return "a target must not be empty";
           return "";
         },
         [](TrainConfig& c, const json& v) {
           if (!v.empty()) c.lora.targets = v.get<std::vector<std::string>>();
         },
         "to_q"},
        {"lora.init_adapter", "", "start from this adapter file instead of a fresh initialisation", any(),
         into(&TrainConfig::init_adapter)},

        {"lcd.num_ddim_timesteps", 50, "N of the skipping-step grid, k = 1000/N (must divide 1000)",
         [](const json& v) { return v.get<int64_t>() >= 1 && 1000 % v.get<int64_t>() == 0 ? "" : "must divide 1000"; },
         [](TrainConfig& c, const json& v) { c.lcd.num_ddim_timesteps = v; }},
        {"lcd.top_step_fraction", 0.0,
         "share of samples trained at the grid's top point t = 999, the one point 1-step sampling evaluates (the rest "
         "uniform over the grid; 0: uniform, 1/N of them there)",
         in_unit(true), [](TrainConfig& c, const json& v) { c.lcd.top_step_fraction = v; }},
        {"lcd.guidance_min", 3.0, "guidance scale s per sample ~ U[min, max] (diffusers' convention, s = w + 1)", at_least(0),
         into(&TrainConfig::guidance_min)},
        {"lcd.guidance_max", 3.0, "upper end of the guidance range (= min for a fixed scale)", at_least(0),
         into(&TrainConfig::guidance_max)},
        {"lcd.solver", "ddim",
         "Ψ, the teacher's ODE step: \"ddim\", \"dpm-solver-2\" or \"dpm-solver++2s\" (second order, twice the teacher "
         "evaluations; guidance applied at each evaluation)",
         one_of({"ddim", "dpm-solver-2", "dpm-solver++2s"}),
         [](TrainConfig& c, const json& v) { c.lcd.solver = parse_ode_solver(v.get<std::string>()); }},
        {"lcd.ema_decay", 0.0, "μ of the EMA target θ⁻ ← μθ⁻ + (1−μ)θ (0: the online adapter, as diffusers' LCM-LoRA)", in_unit(false),
         into(&TrainConfig::ema_decay)},
        {"lcd.loss", "huber", "\"huber\" (pseudo-Huber) or \"l2\"", one_of({"huber", "l2"}),
         [](TrainConfig& c, const json& v) { c.lcd.loss = v == "huber" ? LossType::kHuber : LossType::kL2; }},
        {"lcd.huber_c", 0.001, "c of the pseudo-Huber loss mean(√(d² + c²) − c)", at_least(0, true),
         [](TrainConfig& c, const json& v) { c.lcd.huber_c = v; }},
        {"lcd.cond_dropout", 0.0,
         "probability of training a sample on the unconditional embedding in student, teacher and target, so that the "
         "adapter keeps classifier-free guidance (sample with --guidance > 1; use with guidance_min = max = 1)",
         in_unit(true), into(&TrainConfig::lcd_cond_dropout)},
        {"lcd.guidance_embedding", false,
         "guidance-conditioned LCD (the LCM paper's w-condition): the student gets the UNet's time_cond_proj_dim with "
         "time_embedding.cond_proj (zero-initialised, trained with the LoRA, exported with it) fed diffusers' "
         "guidance-scale embedding of w = s − 1 for the sample's s ~ U[guidance_min, guidance_max]; lcm-sample --guidance S "
         "then selects the scale without a CFG pass",
         any(), [](TrainConfig& c, const json& v) { c.lcd.guidance_embedding = v; }},
        {"lcd.guidance_embedding_lr_scale", 1.0,
         "learning-rate factor of time_embedding.cond_proj against the LoRA's (its decoupled weight decay scales with it)",
         at_least(0, true), into(&TrainConfig::guidance_embedding_lr_scale)},
        {"lcd.guidance_embedding_dim", 256, "time_cond_proj_dim of the guidance embedding (diffusers' LCM script: 256)",
         int_range(2, 4096), [](TrainConfig& c, const json& v) { c.lcd.guidance_embedding_dim = v; }},
        {"pcm.phases", 4, "objective pcm: M phases of the skipping-step grid (sample with --sampler pcm --steps M)",
         int_range(1, 1000), into(&TrainConfig::pcm_phases)},
        {"diffusion.cond_dropout", 0.1, "probability of replacing the condition by the unconditional one (for CFG)", in_unit(true),
         into(&TrainConfig::cond_dropout)},

        {"optim.lr", 1e-4, "peak learning rate", at_least(0, true), into(&TrainConfig::lr)},
        {"optim.beta1", 0.9, "AdamW β1", in_unit(false), into(&TrainConfig::beta1)},
        {"optim.beta2", 0.999, "AdamW β2", in_unit(false), into(&TrainConfig::beta2)},
        {"optim.eps", 1e-8, "AdamW ε", at_least(0, true), into(&TrainConfig::adam_eps)},
        {"optim.weight_decay", 0.01, "AdamW decoupled weight decay", at_least(0), into(&TrainConfig::weight_decay)},
        {"optim.max_grad_norm", 1.0, "clip the global gradient norm to this (0: no clipping)", at_least(0),
         into(&TrainConfig::max_grad_norm)},
        {"optim.schedule", "constant",
         "\"constant\", \"warmup\" (linear warmup then constant) or \"cosine\" (warmup then cosine to min_lr)",
         one_of({"constant", "warmup", "cosine"}), into(&TrainConfig::lr_schedule)},
        {"optim.warmup_steps", 0, "linear warmup steps", at_least(0), into(&TrainConfig::warmup_steps)},
        {"optim.min_lr", 0.0, "final learning rate of the cosine schedule", at_least(0), into(&TrainConfig::min_lr)},

        {"train.steps", 1000, "optimiser steps", at_least(1), into(&TrainConfig::steps)},
        {"train.batch_size", 128, "samples per step", int_range(1, 65536), into(&TrainConfig::batch_size)},
        {"train.time_limit_minutes", 0.0, "stop (with a checkpoint and the adapters written) after this long; 0: no limit",
         at_least(0), into(&TrainConfig::time_limit_minutes)},
        {"train.precision", "auto",
         "GEMM operands: \"fp32\", \"bf16\" (AMX-BF16 or AVX512-BF16; runs fp32 elsewhere, saying so) or \"auto\" (the "
         "default: bf16 where the CPU has AMX-BF16 or AVX512-BF16, else fp32); the resolved config records what ran",
         one_of({"auto", "fp32", "bf16"}), into(&TrainConfig::precision)},
        {"checkpoint.every", 100, "checkpoint every K steps (and at the end)", at_least(1), into(&TrainConfig::checkpoint_every)},
        {"checkpoint.keep", 3, "keep the last K checkpoints", int_range(1, 100000), into(&TrainConfig::checkpoint_keep)},
        {"log.every", 10, "write metrics and the progress line every K steps", at_least(1), into(&TrainConfig::log_every)},

        {"samples.every", 250, "write sample grids every K steps (0: only at the end)", at_least(0), into(&TrainConfig::samples_every)},
        {"samples.seed", 1234, "seed of the grids' noise (fixed, so grids are comparable across steps)", at_least(0),
         [](TrainConfig& c, const json& v) { c.samples_seed = v.get<uint64_t>(); }},
        {"samples.labels", json::array({0, 1, 2, 3, 4, 5, 6, 7, 8, 9}), "labels of the grids' rows (at most 1000, each ≥ 0)",
         [](const json& v) {
           if (v.size() > 1000) return std::string("at most 1000 labels");
           for (const json& x : v)
             if (x.get<int64_t>() < 0) return std::string("labels are ≥ 0");
           return std::string();
         },
         [](TrainConfig& c, const json& v) { c.samples_labels = v.get<std::vector<int64_t>>(); }, 0},
        {"samples.per_label", 2, "samples per label (columns)", int_range(1, 1000), into(&TrainConfig::samples_per_label)},
        {"samples.lcm_steps", json::array({1, 2, 4}), "LCM step counts for the grids (objectives lcd and lcf)", each_int(1, 50),
         [](TrainConfig& c, const json& v) { c.samples_lcm_steps = v.get<std::vector<int>>(); }, 4},
        {"samples.teacher_steps", 50, "DDIM steps for the grids (objective diffusion)", int_range(1, 1000),
         into(&TrainConfig::samples_teacher_steps)},
        {"samples.guidance", 2.0, "guidance scale of the DDIM grids (objective diffusion)", any(), into(&TrainConfig::samples_guidance)},
    };
  }();
  return keys;
}

// "optim.lr" → /optim/lr
json::json_pointer pointer_of(std::string key) {
  for (char& ch : key)
    if (ch == '.') ch = '/';
  return json::json_pointer("/" + key);
}

const KeySpec* find_key(const std::string& key) {
  for (const KeySpec& k : config_keys())
    if (k.key == key) return &k;
  return nullptr;
}

// The defaults as a nested object.
const json& default_config() {
  static const json d = [] {
    json out = json::object();
    for (const KeySpec& k : config_keys()) out[pointer_of(k.key)] = k.default_value;
    return out;
  }();
  return d;
}

const char* type_name(const json& j) {
  if (j.is_boolean()) return "a boolean";
  if (j.is_number_integer()) return "an integer";
  if (j.is_number()) return "a number";
  if (j.is_string()) return "a string";
  if (j.is_array()) return "a list";
  if (j.is_object()) return "an object";
  return "null";
}

bool same_kind(const json& want, const json& got) {
  if (want.is_number_integer()) return got.is_number_integer();
  if (want.is_number()) return got.is_number();
  if (want.is_boolean()) return got.is_boolean();
  if (want.is_string()) return got.is_string();
  if (want.is_array()) return got.is_array();
  if (want.is_object()) return got.is_object();
  return false;
}

// Integers fit the fields they fill (no wrap-around: seeds are 0..2^63−1, every other integer fits 32 bits); list
// elements have the list's kind. The error names the key, the position in a list and the value.
void check_value_range(const std::string& key, const json& v, const std::string& origin) {
  auto check_integer = [&](const std::string& where, const json& x) {
    const bool seed = key == "seed" || key == "samples.seed";
    const int64_t lo = seed ? 0 : std::numeric_limits<int32_t>::min(), hi = seed ? std::numeric_limits<int64_t>::max()
                                                                             : std::numeric_limits<int32_t>::max();
    const bool fits = x.is_number_unsigned() ? x.get<uint64_t>() <= static_cast<uint64_t>(hi)
                                             : x.get<int64_t>() >= lo && x.get<int64_t>() <= hi;
    if (!fits)
      throw ConfigError(origin + ": \"" + where + "\" = " + x.dump() + " is out of range [" + std::to_string(lo) + ", " +
                        std::to_string(hi) + "]");
  };
  if (v.is_number_integer()) check_integer(key, v);
  if (!v.is_array()) return;
  const KeySpec* spec = find_key(key);
  for (size_t i = 0; i < v.size(); ++i) {
    const std::string where = key + "[" + std::to_string(i) + "]";
    if (spec && !spec->element.is_null() && !same_kind(spec->element, v[i]))
      throw ConfigError(origin + ": \"" + where + "\" must be " + type_name(spec->element) + ", got " + v[i].dump());
    if (v[i].is_number_integer()) check_integer(where, v[i]);
  }
}

// Overlays `user` on `defaults`, rejecting unknown keys and wrong types.
void overlay(json& target, const json& user, const std::string& prefix, const std::string& origin) {
  for (auto it = user.begin(); it != user.end(); ++it) {
    const std::string key = prefix.empty() ? it.key() : prefix + "." + it.key();
    if (!target.contains(it.key())) {
      std::string hint;
      for (const KeySpec& k : config_keys())
        if (k.key.rfind(prefix + ".", 0) == 0 && !prefix.empty()) hint += (hint.empty() ? "" : ", ") + k.key;
      throw ConfigError(origin + ": unknown key \"" + key + "\"" + (hint.empty() ? "" : " (known: " + hint + ")"));
    }
    json& slot = target[it.key()];
    if (slot.is_object()) {
      if (!it.value().is_object())
        throw ConfigError(origin + ": \"" + key + "\" must be an object, got " + it.value().dump());
      overlay(slot, it.value(), key, origin);
    } else {
      if (!same_kind(slot, it.value()))
        throw ConfigError(origin + ": \"" + key + "\" must be " + type_name(slot) + ", got " + it.value().dump());
      check_value_range(key, it.value(), origin);
      slot = it.value();
    }
  }
}

}  // namespace

std::string describe_config() {
  std::ostringstream out;
  for (const KeySpec& k : config_keys()) out << "  " << k.key << " = " << k.default_value.dump() << "\n      " << k.doc << "\n";
  return out.str();
}

std::string commented_default_config() {
  // Keys are grouped by their dotted path, in the table's order; each key's documentation is a // comment above
  // it (lcd-train reads JSON with comments).
  struct Node {
    std::vector<std::string> order;
    std::map<std::string, Node> children;
    const KeySpec* leaf = nullptr;
  };
  Node root;
  for (const KeySpec& k : config_keys()) {
    Node* n = &root;
    std::stringstream parts(k.key);
    for (std::string part; std::getline(parts, part, '.');) {
      if (!n->children.count(part)) n->order.push_back(part);
      n = &n->children[part];
    }
    n->leaf = &k;
  }
  std::ostringstream out;
  std::function<void(const Node&, int)> write = [&](const Node& n, int depth) {
    const std::string pad(2 * depth, ' ');
    for (size_t i = 0; i < n.order.size(); ++i) {
      const Node& c = n.children.at(n.order[i]);
      const std::string comma = i + 1 < n.order.size() ? "," : "";
      if (c.leaf) {
        std::string doc = c.leaf->doc;
        for (char& ch : doc)
          if (ch == '\n') ch = ' ';
        out << pad << "// " << doc << "\n" << pad << json(n.order[i]).dump() << ": " << c.leaf->default_value.dump() << comma << "\n";
      } else {
        out << pad << json(n.order[i]).dump() << ": {\n";
        write(c, depth + 1);
        out << pad << "}" << comma << "\n";
      }
    }
  };
  out << "// lcd-train configuration: every key at its default (lcd-train --print-config). Delete what you keep\n"
         "// at the default; lcd-train reads this file as it is, comments included.\n{\n";
  write(root, 1);
  out << "}\n";
  return out.str();
}

std::vector<std::string> config_key_names() {
  std::vector<std::string> names;
  for (const KeySpec& k : config_keys()) names.push_back(k.key);
  return names;
}

TrainConfig parse_train_config(const json& user, const std::string& origin) {
  if (!user.is_object()) throw ConfigError(origin + ": the config must be a JSON object");
  json r = default_config();
  overlay(r, user, "", origin);
  auto fail = [&](const std::string& key, const std::string& why) {
    return ConfigError(origin + ": \"" + key + "\" = " + r[pointer_of(key)].dump() +
                       ": " + why);
  };
  TrainConfig c;
  c.resolved = r;
  c.source_path = origin;
  // 1. Each key alone: its check, then its field.
  for (const KeySpec& k : config_keys()) {
    const json& v = r[pointer_of(k.key)];
    if (const std::string why = k.check(v); !why.empty()) throw fail(k.key, why);
    k.store(c, v);
  }
  // 2. Keys together.
  const ObjectiveSpec& objective = *find_objective(c.objective);
  if (objective.needs_lora && !c.lora_enabled)
    throw fail("lora.enabled", "objective " + c.objective + " trains a LoRA adapter");
  if (objective.needs_init_adapter && c.init_adapter.empty())
    throw fail("lora.init_adapter", "objective " + c.objective + " starts from a distilled adapter: name its file here");
  if (c.guidance_embedding_lr_scale != 1.0 && !c.lcd.guidance_embedding)
    throw fail("lcd.guidance_embedding_lr_scale", "scales the lr of the guidance embedding: needs lcd.guidance_embedding");
  if (c.lcd.guidance_embedding && c.objective != "lcd" && c.objective != "pcm")
    throw fail("lcd.guidance_embedding", "only objectives lcd and pcm distil guidance into an embedding");
  if (c.guidance_max < c.guidance_min) throw fail("lcd.guidance_max", "needs 0 ≤ guidance_min ≤ guidance_max");
  if (c.objective == "pcm" && c.pcm_phases > c.lcd.num_ddim_timesteps)
    throw fail("pcm.phases", "at most lcd.num_ddim_timesteps (" + std::to_string(c.lcd.num_ddim_timesteps) + ") phases");

  // 3. Files that must exist.
  namespace fs = std::filesystem;
  if (!fs::exists(fs::path(c.model_dir) / "unet" / "config.json")) throw fail("model", "no unet/config.json there");
  if (!c.init_adapter.empty() && !fs::exists(c.init_adapter)) throw fail("lora.init_adapter", "file not found");
  if (!fs::exists(c.data_path)) throw fail("data.path", "not found");
  if (!c.labels_file.empty() && !fs::exists(c.labels_file)) throw fail("data.labels_file", "file not found");
  if (c.latent_cache.empty()) {
    c.latent_cache = (fs::path(c.output_dir).parent_path() /
                      ("latents-" + c.data_source + "-" + c.data_split + (c.data_style.empty() ? "" : "-" + c.data_style) +
                       (c.data_limit > 0 ? "-" + std::to_string(c.data_limit) : "") + ".h5"))
                         .string();
    c.resolved["data"]["latent_cache"] = c.latent_cache;
  }
  return c;
}

TrainConfig load_train_config(const std::string& path) { return parse_train_config(read_json_file(path), path); }

}  // namespace lcd
