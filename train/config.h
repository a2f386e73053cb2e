// lcd-train's configuration: every key has one row in one table (config.cpp, config_keys): its default, its
// meaning, its check and the field it fills. A config file overrides any subset; an unknown key, a wrong type or
// an impossible value is a ConfigError naming the key and the value. The resolved config (defaults filled in)
// is written into the run directory.
#pragma once
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "train/lcd_objective.h"
#include "train/trainable_lora.h"

namespace lcd {

struct TrainConfig {
  nlohmann::json resolved;  // the full config, defaults filled in
  std::string source_path;  // the file it was read from (the origin in errors)

  std::string objective;  // a row of objective_table (train/objective.h)
  std::string model_dir, output_dir;
  uint64_t seed;
  int threads;
  // data
  std::string data_source, data_path, data_split, labels_file, latent_cache, data_style;
  int64_t data_limit, encode_batch;
  bool sample_posterior;
  // lora
  bool lora_enabled;
  LoraSettings lora;
  std::string init_adapter;  // continue from an adapter file (optional)
  // lcd (and pcm, lcf)
  LcdSettings lcd;
  double guidance_min, guidance_max, ema_decay, lcd_cond_dropout;
  double guidance_embedding_lr_scale;  // lr factor of time_embedding.cond_proj
  int pcm_phases;
  // diffusion
  double cond_dropout;
  // optimiser and schedule
  double lr, beta1, beta2, adam_eps, weight_decay, max_grad_norm, min_lr;
  std::string lr_schedule;
  int64_t warmup_steps;
  // loop
  int64_t steps, batch_size;
  double time_limit_minutes;
  std::string precision;  // "auto", "fp32" or "bf16" as configured
  int64_t checkpoint_every, checkpoint_keep, log_every;
  // sample grids
  int64_t samples_every, samples_per_label;
  uint64_t samples_seed;
  std::vector<int64_t> samples_labels;
  std::vector<int> samples_lcm_steps;
  int samples_teacher_steps;
  double samples_guidance;
};

// Parses and validates; `origin` names the file in errors; relative paths are kept as given.
TrainConfig parse_train_config(const nlohmann::json& user, const std::string& origin);
TrainConfig load_train_config(const std::string& path);

// "key = default" and its meaning for every key (lcd-train --help-config).
std::string describe_config();
// A config file with every key at its default, each under a // comment with its documentation
// (lcd-train --print-config); lcd-train reads it as it is.
std::string commented_default_config();
// Every key of the table, dotted ("optim.lr"), in table order.
std::vector<std::string> config_key_names();

}  // namespace lcd
