// lcd-train configuration: defaults, documentation and validation (see config.h).
#include "train/config.h"

#include <filesystem>
#include <limits>
#include <map>
#include <fstream>
#include <sstream>

#include "autograd/errors.h"
#include "datasets/style.h"
#include "infer/nn/config_check.h"

namespace lcd {

using json = nlohmann::json;

namespace {

// Every key with its default. The reference configuration is fmnist-ldm-v1 LCM-LoRA (DESIGN.md §3).
const json& default_config() {
  static const json d = json::parse(R"({
    "objective": "lcd",
    "model": "models/fmnist-ldm-v1",
    "output_dir": "runs/lcm-lora",
    "seed": 0,
    "threads": 0,
    "data": {"source": "fashion-mnist", "path": "/usr/share/datasets/fashion-mnist", "split": "train",
             "labels_file": "", "limit": -1, "style": "", "latent_cache": "", "encode_batch": 256, "sample_posterior": false},
    "lora": {"enabled": true, "rank": 16, "alpha": 16, "targets": [], "init_adapter": ""},
    "lcd": {"num_ddim_timesteps": 50, "guidance_min": 3.0, "guidance_max": 3.0, "solver": "ddim",
            "ema_decay": 0.0, "loss": "huber", "huber_c": 0.001},
    "diffusion": {"cond_dropout": 0.1},
    "optim": {"lr": 1e-4, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.01, "max_grad_norm": 1.0,
              "schedule": "constant", "warmup_steps": 0, "min_lr": 0.0},
    "train": {"steps": 1000, "batch_size": 128, "time_limit_minutes": 0, "precision": "auto"},
    "checkpoint": {"every": 100, "keep": 3},
    "log": {"every": 10},
    "samples": {"every": 250, "seed": 1234, "labels": [0, 1, 2, 3, 4, 5, 6, 7, 8, 9], "per_label": 2,
                "lcm_steps": [1, 2, 4], "teacher_steps": 50, "guidance": 2.0}
  })");
  return d;
}

const std::map<std::string, std::string>& config_docs() {
  static const std::map<std::string, std::string> docs = {
      {"objective", "\"lcd\" (latent consistency distillation) or \"diffusion\" (ε-prediction: teacher or style LoRA)"},
      {"model", "teacher model directory in diffusers layout (unet/, vae/, scheduler/, cond_embeddings.safetensors)"},
      {"output_dir", "run directory: config, checkpoints, metrics.jsonl, samples/, final adapters"},
      {"seed", "seed of every random draw (data order, noise, timesteps, guidance, LoRA init)"},
      {"threads", "threads for OpenMP and GEMMs (0: all cores; --threads overrides)"},
      {"data.source", "\"fashion-mnist\" (idx files) or \"folder\" (PNG images, see datasets/image_folder.h)"},
      {"data.path", "folder of the idx files or of the images"},
      {"data.split", "\"train\" or \"test\" (fashion-mnist)"},
      {"data.labels_file", "folder source: labels file instead of class sub-folders"},
      {"data.limit", "use only the first N images (-1: all)"},
      {"data.style", "restyle the images before encoding: \"\" (none), \"invert\" or \"thicken\" (datasets/style.h)"},
      {"data.latent_cache", "HDF5 latent cache (default: <output_dir>/../latents-<source>-<split>.h5); rebuilt when stale"},
      {"data.encode_batch", "images per autoencoder pass when building the cache"},
      {"data.sample_posterior", "train on z ~ N(mean, exp(logvar)) instead of the posterior mean"},
      {"lora.enabled", "train a LoRA adapter (false: the whole UNet, objective diffusion only)"},
      {"lora.rank", "LoRA rank r"},
      {"lora.alpha", "LoRA alpha; the scale is alpha / r"},
      {"lora.targets", "module-name suffixes to adapt ([]: diffusers' LCM-LoRA list, DESIGN.md §5)"},
      {"lora.init_adapter", "start from this adapter file instead of a fresh initialisation"},
      {"lcd.num_ddim_timesteps", "N of the skipping-step grid, k = 1000/N (must divide 1000)"},
      {"lcd.guidance_min", "guidance scale s per sample ~ U[min, max] (diffusers' convention, s = w + 1)"},
      {"lcd.guidance_max", "upper end of the guidance range (= min for a fixed scale)"},
      {"lcd.solver", "Ψ, the teacher's ODE step: \"ddim\""},
      {"lcd.ema_decay", "μ of the EMA target θ⁻ ← μθ⁻ + (1−μ)θ (0: the online adapter, as diffusers' LCM-LoRA)"},
      {"lcd.loss", "\"huber\" (pseudo-Huber) or \"l2\""},
      {"lcd.huber_c", "c of the pseudo-Huber loss mean(√(d² + c²) − c)"},
      {"diffusion.cond_dropout", "probability of replacing the condition by the unconditional one (for CFG)"},
      {"optim.lr", "peak learning rate"},
      {"optim.beta1", "AdamW β1"},
      {"optim.beta2", "AdamW β2"},
      {"optim.eps", "AdamW ε"},
      {"optim.weight_decay", "AdamW decoupled weight decay"},
      {"optim.max_grad_norm", "clip the global gradient norm to this (0: no clipping)"},
      {"optim.schedule", "\"constant\", \"warmup\" (linear warmup then constant) or \"cosine\" (warmup then cosine to min_lr)"},
      {"optim.warmup_steps", "linear warmup steps"},
      {"optim.min_lr", "final learning rate of the cosine schedule"},
      {"train.steps", "optimiser steps"},
      {"train.batch_size", "samples per step"},
      {"train.time_limit_minutes", "stop (with a checkpoint and the adapters written) after this long; 0: no limit"},
      {"train.precision", "GEMM operands: \"fp32\", \"bf16\" (AMX-BF16 or AVX512-BF16; runs fp32 elsewhere, saying so) or "
                          "\"auto\" (the default: bf16 where the CPU has AMX, else fp32); the resolved config records what ran"},
      {"checkpoint.every", "checkpoint every K steps (and at the end)"},
      {"checkpoint.keep", "keep the last K checkpoints"},
      {"log.every", "write metrics and the progress line every K steps"},
      {"samples.every", "write sample grids every K steps (0: only at the end)"},
      {"samples.seed", "seed of the grids' noise (fixed, so grids are comparable across steps)"},
      {"samples.labels", "labels of the grids' rows"},
      {"samples.per_label", "samples per label (columns)"},
      {"samples.lcm_steps", "LCM step counts for the grids (objective lcd)"},
      {"samples.teacher_steps", "DDIM steps for the grids (objective diffusion)"},
      {"samples.guidance", "guidance scale of the DDIM grids (objective diffusion)"}};
  return docs;
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

// What each list holds (lists have no element to infer it from when their default is empty).
const std::map<std::string, json>& list_elements() {
  static const std::map<std::string, json> kinds = {
      {"lora.targets", "to_q"}, {"samples.labels", 0}, {"samples.lcm_steps", 4}};
  return kinds;
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
  auto kind = list_elements().find(key);
  for (size_t i = 0; i < v.size(); ++i) {
    const std::string where = key + "[" + std::to_string(i) + "]";
    if (kind != list_elements().end() && !same_kind(kind->second, v[i]))
      throw ConfigError(origin + ": \"" + where + "\" must be " + type_name(kind->second) + ", got " + v[i].dump());
    if (v[i].is_number_integer()) check_integer(where, v[i]);
  }
}

// Overlays `user` on `defaults`, rejecting unknown keys and wrong types.
void overlay(json& target, const json& user, const std::string& prefix, const std::string& origin) {
  for (auto it = user.begin(); it != user.end(); ++it) {
    const std::string key = prefix.empty() ? it.key() : prefix + "." + it.key();
    if (!target.contains(it.key())) {
      std::string hint;
      for (const auto& [k, doc] : config_docs())
        if (k.rfind(prefix, 0) == 0 && !prefix.empty()) hint += (hint.empty() ? "" : ", ") + k;
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
  std::function<void(const json&, const std::string&)> walk = [&](const json& j, const std::string& prefix) {
    for (auto it = j.begin(); it != j.end(); ++it) {
      const std::string key = prefix.empty() ? it.key() : prefix + "." + it.key();
      if (it.value().is_object()) {
        walk(it.value(), key);
      } else {
        auto doc = config_docs().find(key);
        out << "  " << key << " = " << it.value().dump() << "\n      "
            << (doc == config_docs().end() ? "" : doc->second) << "\n";
      }
    }
  };
  walk(default_config(), "");
  return out.str();
}

TrainConfig parse_train_config(const json& user, const std::string& origin) {
  if (!user.is_object()) throw ConfigError(origin + ": the config must be a JSON object");
  json r = default_config();
  overlay(r, user, "", origin);
  auto fail = [&](const std::string& key, const json& value, const std::string& why) {
    return ConfigError(origin + ": \"" + key + "\" = " + value.dump() + ": " + why);
  };
  TrainConfig c;
  c.resolved = r;
  c.source_path = origin;
  c.objective = r["objective"];
  if (c.objective != "lcd" && c.objective != "diffusion") throw fail("objective", r["objective"], "must be \"lcd\" or \"diffusion\"");
  c.model_dir = r["model"];
  c.output_dir = r["output_dir"];
  if (c.output_dir.empty()) throw fail("output_dir", r["output_dir"], "must not be empty");
  if (r["seed"].get<int64_t>() < 0) throw fail("seed", r["seed"], "must be ≥ 0");
  c.seed = r["seed"].get<uint64_t>();
  c.threads = r["threads"];
  if (c.threads < 0 || c.threads > 4096) throw fail("threads", r["threads"], "must be 0..4096");

  const json& d = r["data"];
  c.data_source = d["source"];
  c.data_path = d["path"];
  c.data_split = d["split"];
  c.labels_file = d["labels_file"];
  c.data_limit = d["limit"];
  c.data_style = d["style"];
  if (!is_known_style(c.data_style)) throw fail("data.style", d["style"], "must be \"\", \"invert\" or \"thicken\"");
  c.latent_cache = d["latent_cache"];
  c.encode_batch = d["encode_batch"];
  c.sample_posterior = d["sample_posterior"];
  if (c.data_source != "fashion-mnist" && c.data_source != "folder")
    throw fail("data.source", d["source"], "must be \"fashion-mnist\" or \"folder\"");
  if (c.data_split != "train" && c.data_split != "test") throw fail("data.split", d["split"], "must be \"train\" or \"test\"");
  if (c.data_limit == 0 || c.data_limit < -1) throw fail("data.limit", d["limit"], "must be -1 (all) or positive");
  if (c.encode_batch < 1 || c.encode_batch > 65536) throw fail("data.encode_batch", d["encode_batch"], "must be 1..65536");

  const json& l = r["lora"];
  c.lora_enabled = l["enabled"];
  c.lora.rank = l["rank"];
  c.lora.alpha = l["alpha"];
  c.init_adapter = l["init_adapter"];
  if (!l["targets"].empty()) c.lora.targets = l["targets"].get<std::vector<std::string>>();
  if (c.lora.rank < 1 || c.lora.rank > 4096) throw fail("lora.rank", l["rank"], "must be 1..4096");
  if (!(c.lora.alpha > 0)) throw fail("lora.alpha", l["alpha"], "must be > 0");
  for (const auto& t : c.lora.targets)
    if (t.empty()) throw fail("lora.targets", l["targets"], "a target must not be empty");
  if (!c.lora_enabled && c.objective == "lcd") throw fail("lora.enabled", l["enabled"], "objective lcd trains a LoRA adapter");

  const json& x = r["lcd"];
  c.lcd.num_ddim_timesteps = x["num_ddim_timesteps"];
  if (c.lcd.num_ddim_timesteps < 1 || 1000 % c.lcd.num_ddim_timesteps != 0)
    throw fail("lcd.num_ddim_timesteps", x["num_ddim_timesteps"], "must divide 1000");
  c.guidance_min = x["guidance_min"];
  c.guidance_max = x["guidance_max"];
  if (c.guidance_min < 0 || c.guidance_max < c.guidance_min)
    throw fail("lcd.guidance_max", x["guidance_max"], "needs 0 ≤ guidance_min ≤ guidance_max");
  const std::string solver = x["solver"];
  if (solver != "ddim") throw fail("lcd.solver", x["solver"], "must be \"ddim\"");
  c.ema_decay = x["ema_decay"];
  if (c.ema_decay < 0 || c.ema_decay >= 1) throw fail("lcd.ema_decay", x["ema_decay"], "must be in [0, 1)");
  const std::string loss = x["loss"];
  if (loss != "huber" && loss != "l2") throw fail("lcd.loss", x["loss"], "must be \"huber\" or \"l2\"");
  c.lcd.loss = loss == "huber" ? LossType::kHuber : LossType::kL2;
  c.lcd.huber_c = x["huber_c"];
  if (!(c.lcd.huber_c > 0)) throw fail("lcd.huber_c", x["huber_c"], "must be > 0");

  c.cond_dropout = r["diffusion"]["cond_dropout"];
  if (c.cond_dropout < 0 || c.cond_dropout > 1) throw fail("diffusion.cond_dropout", r["diffusion"]["cond_dropout"], "must be in [0, 1]");

  const json& o = r["optim"];
  c.lr = o["lr"];
  c.beta1 = o["beta1"];
  c.beta2 = o["beta2"];
  c.adam_eps = o["eps"];
  c.weight_decay = o["weight_decay"];
  c.max_grad_norm = o["max_grad_norm"];
  c.lr_schedule = o["schedule"];
  c.warmup_steps = o["warmup_steps"];
  c.min_lr = o["min_lr"];
  if (!(c.lr > 0)) throw fail("optim.lr", o["lr"], "must be > 0");
  if (c.beta1 < 0 || c.beta1 >= 1) throw fail("optim.beta1", o["beta1"], "must be in [0, 1)");
  if (c.beta2 < 0 || c.beta2 >= 1) throw fail("optim.beta2", o["beta2"], "must be in [0, 1)");
  if (!(c.adam_eps > 0)) throw fail("optim.eps", o["eps"], "must be > 0");
  if (c.weight_decay < 0) throw fail("optim.weight_decay", o["weight_decay"], "must be ≥ 0");
  if (c.max_grad_norm < 0) throw fail("optim.max_grad_norm", o["max_grad_norm"], "must be ≥ 0");
  if (c.lr_schedule != "constant" && c.lr_schedule != "warmup" && c.lr_schedule != "cosine")
    throw fail("optim.schedule", o["schedule"], "must be \"constant\", \"warmup\" or \"cosine\"");
  if (c.warmup_steps < 0) throw fail("optim.warmup_steps", o["warmup_steps"], "must be ≥ 0");

  const json& t = r["train"];
  c.steps = t["steps"];
  c.batch_size = t["batch_size"];
  c.time_limit_minutes = t["time_limit_minutes"];
  if (c.steps < 1) throw fail("train.steps", t["steps"], "must be ≥ 1");
  if (c.batch_size < 1 || c.batch_size > 65536) throw fail("train.batch_size", t["batch_size"], "must be 1..65536");
  if (c.time_limit_minutes < 0) throw fail("train.time_limit_minutes", t["time_limit_minutes"], "must be ≥ 0");
  c.precision = t["precision"];
  if (c.precision != "auto" && c.precision != "fp32" && c.precision != "bf16")
    throw fail("train.precision", t["precision"], "must be \"auto\", \"fp32\" or \"bf16\"");
  c.checkpoint_every = r["checkpoint"]["every"];
  c.checkpoint_keep = r["checkpoint"]["keep"];
  c.log_every = r["log"]["every"];
  if (c.checkpoint_every < 1) throw fail("checkpoint.every", r["checkpoint"]["every"], "must be ≥ 1");
  if (c.checkpoint_keep < 1 || c.checkpoint_keep > 100000) throw fail("checkpoint.keep", r["checkpoint"]["keep"], "must be 1..100000");
  if (c.log_every < 1) throw fail("log.every", r["log"]["every"], "must be ≥ 1");

  const json& s = r["samples"];
  c.samples_every = s["every"];
  c.samples_seed = s["seed"].get<uint64_t>();
  c.samples_labels = s["labels"].get<std::vector<int64_t>>();
  c.samples_per_label = s["per_label"];
  c.samples_lcm_steps = s["lcm_steps"].get<std::vector<int>>();
  c.samples_teacher_steps = s["teacher_steps"];
  c.samples_guidance = s["guidance"];
  if (c.samples_every < 0) throw fail("samples.every", s["every"], "must be ≥ 0");
  if (c.samples_per_label < 1 || c.samples_per_label > 1000) throw fail("samples.per_label", s["per_label"], "must be 1..1000");
  if (c.samples_labels.size() > 1000) throw fail("samples.labels", s["labels"], "at most 1000 labels");
  for (int64_t label : c.samples_labels)
    if (label < 0) throw fail("samples.labels", s["labels"], "labels are ≥ 0");
  if (c.samples_teacher_steps < 1 || c.samples_teacher_steps > 1000)
    throw fail("samples.teacher_steps", s["teacher_steps"], "must be 1..1000");
  for (int n : c.samples_lcm_steps)
    if (n < 1 || n > 50) throw fail("samples.lcm_steps", s["lcm_steps"], "each must be 1..50");

  // Files that must exist.
  namespace fs = std::filesystem;
  if (!fs::exists(fs::path(c.model_dir) / "unet" / "config.json"))
    throw fail("model", r["model"], "no unet/config.json there");
  if (!c.init_adapter.empty() && !fs::exists(c.init_adapter)) throw fail("lora.init_adapter", l["init_adapter"], "file not found");
  if (!fs::exists(c.data_path)) throw fail("data.path", d["path"], "not found");
  if (!c.labels_file.empty() && !fs::exists(c.labels_file)) throw fail("data.labels_file", d["labels_file"], "file not found");
  if (c.latent_cache.empty()) {
    c.latent_cache = (fs::path(c.output_dir).parent_path() /
                      ("latents-" + c.data_source + "-" + c.data_split + (c.data_style.empty() ? "" : "-" + c.data_style) + (c.data_limit > 0 ? "-" + std::to_string(c.data_limit) : "") + ".h5"))
                         .string();
    c.resolved["data"]["latent_cache"] = c.latent_cache;
  }
  return c;
}

TrainConfig load_train_config(const std::string& path) { return parse_train_config(read_json_file(path), path); }

}  // namespace lcd
