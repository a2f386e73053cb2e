// The training loop (see trainer.h).
#include "train/trainer.h"

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <ctime>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

#include "autograd/atomic_file.h"
#include "autograd/crash_points.h"
#include "autograd/errors.h"
#include "autograd/threads.h"
#include "infer/tools/cli.h"
#include "infer/tools/no_overwrite.h"
#include "datasets/batcher.h"
#include "datasets/png.h"
#include "infer/io/lora_io.h"
#include "infer/io/model_io.h"
#include "infer/nn/config_check.h"
#include "infer/samplers.h"
#include "train/adamw.h"
#include "train/checkpoint.h"
#include "train/distributed.h"
#include "train/lr_schedule.h"
#include "train/metrics_csv.h"
#include "train/objective.h"
#include "train/training_data.h"

namespace lcd {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

std::atomic<bool> g_stop_requested{false};

const char* kNonFiniteAdvice =
    " (lower optim.lr, lcd.guidance_max or optim.max_grad_norm in the config; --resume then continues from the last "
    "regular checkpoint with them)";

const std::pair<const char*, const char*> kAdjustableOnResume[] = {
    {"optim", "lr"}, {"optim", "max_grad_norm"}, {"lcd", "guidance_min"}, {"lcd", "guidance_max"}};
extern "C" void request_stop(int) { g_stop_requested = true; }

// Keys that may change between a run and its resume without changing what a step computes, and the settings
// that the non-finite-loss advice names (a lower learning rate, a smaller guidance range, tighter clipping),
// which change it on purpose and are recorded in config_history.jsonl.
nlohmann::json computation_keys(nlohmann::json c) {
  for (const char* k : {"output_dir", "threads", "checkpoint", "log", "samples"}) c.erase(k);
  c["train"].erase("steps");
  c["train"].erase("time_limit_minutes");
  for (const auto& [group, key] : kAdjustableOnResume) c[group].erase(key);
  return c;
}

std::string first_difference(const nlohmann::json& a, const nlohmann::json& b, const std::string& prefix = "") {
  if (a.is_object() && b.is_object()) {
    for (auto it = a.begin(); it != a.end(); ++it) {
      const std::string key = prefix.empty() ? it.key() : prefix + "." + it.key();
      if (!b.contains(it.key())) return key;
      std::string d = first_difference(it.value(), b[it.key()], key);
      if (!d.empty()) return d;
    }
    return "";
  }
  return a == b ? "" : prefix;
}

std::string format_duration(double seconds) {
  const long s = static_cast<long>(seconds);
  char buf[32];
  if (s >= 3600)
    std::snprintf(buf, sizeof buf, "%ldh%02ldm", s / 3600, (s / 60) % 60);
  else
    std::snprintf(buf, sizeof buf, "%ldm%02lds", s / 60, s % 60);
  return buf;
}

}  // namespace

struct Trainer::State {
  TrainConfig config;
  std::string run_dir, checkpoint_dir;
  std::unique_ptr<UNet2DConditionModel> unet;
  std::unique_ptr<AutoencoderKL> vae;
  NoiseSchedule schedule;
  TrainingData data;
  Rng rng;
  std::unique_ptr<TrainableLora> lora;
  FlatParameters full;  // whole-UNet training (objective diffusion without LoRA)
  FlatParameters* params = nullptr;
  std::unique_ptr<AdamW> optimizer;
  std::unique_ptr<Objective> objective;
  std::unique_ptr<Batcher> batcher;
  int64_t step = 0;
  // The state as of the last completed step, for emergency checkpoints.
  std::string good_rng;
  int64_t good_epoch = 0, good_position = 0;
  struct Progress {
    Clock::time_point start;
    int64_t first_step = 0;
    bool tty = false;
  } progress;

  struct StepResult {
    StepLosses losses;
    double grad_norm, lr;
    double comm_time = 0;  // seconds in collectives (multi-process runs)
  };

  TrainingState snapshot(bool last_good) const;
  uint64_t state_hash() const;  // of the weights, EMA, optimiser moments, generator and step
  // The construction steps, in order: nothing is written before the inputs and the resume state have loaded.
  void check_run_dir(bool resuming, const std::string& config_source) const;
  void load_inputs();
  std::string resume_from_checkpoint(nlohmann::json* changes);
  void check_against_run(const TrainingState& t, const std::string& origin) const;
  void restore(const TrainingState& t);
  void prepare_run_dir(const std::string& resumed_from, const nlohmann::json& changes) const;
  StepResult one_step();
  void sum_losses_over_processes(StepLosses* losses);
  void sum_gradients_over_processes();
  void after_step(const StepResult& r, double step_time, std::ofstream& metrics, int64_t* last_checkpoint);
  void write_samples(const std::string& tag);
  void export_results();
};

Trainer::Trainer(TrainConfig config, const std::string& resume_dir) : s_(std::make_unique<State>()) {
  State& s = *s_;
  s.config = std::move(config);
  TrainConfig& c = s.config;
  if (c.threads > 0) set_num_threads(c.threads);
  c.resolved["train"]["precision"] = apply_precision(c.precision, "lcd-train", "train.precision");
  s.run_dir = resume_dir.empty() ? c.output_dir : resume_dir;
  c.resolved["output_dir"] = s.run_dir;
  s.checkpoint_dir = (fs::path(s.run_dir) / "checkpoints").string();
  // 1. Where the run goes, 2. every input (rank 0 first: it builds a missing latent cache once, which the other
  // processes then read), 3. the state to resume from; 4. only then the run directory (rank 0). Each stage ends
  // on every process together, so that an error on one ends all (train/distributed.h).
  Communicator& comm = world();
  on_every_process([&] {
    if (c.batch_size < comm.size())
      throw ConfigError(c.source_path + ": \"train.batch_size\" = " + std::to_string(c.batch_size) + " is smaller than the " +
                        std::to_string(comm.size()) + " processes (each computes its rows of every batch)");
    s.check_run_dir(!resume_dir.empty(), c.source_path);
  });
  for (int turn = 0; turn < 2; ++turn)
    on_every_process([&] {
      if ((turn == 0) == comm.is_root()) s.load_inputs();
    });
  nlohmann::json changes = nlohmann::json::object();
  std::string resumed_from;
  on_every_process([&] {
    if (!resume_dir.empty()) resumed_from = s.resume_from_checkpoint(&changes);
  });
  comm.check_identical(s.state_hash(), "the state resumed from " + s.checkpoint_dir);
  on_every_process([&] {
    if (comm.is_root()) s.prepare_run_dir(resumed_from, changes);
  });
  s.good_rng = s.rng.state();
  s.good_epoch = s.batcher->epoch();
  s.good_position = s.batcher->position();
}

void Trainer::State::check_run_dir(bool resuming, const std::string& config_source) const {
  const TrainConfig& c = config;
  if (!resuming && !latest_checkpoint(checkpoint_dir).empty())
    throw ConfigError("output_dir \"" + run_dir + "\" already holds a run; continue it with --resume " + run_dir +
                      " or choose another output_dir");
  if (resuming && latest_checkpoint(checkpoint_dir).empty())
    throw ConfigError("--resume " + run_dir + ": no checkpoint in " + checkpoint_dir);
  // The run directory may not be (or lie inside) an input folder, and nothing it writes may be an input file.
  refuse_overwriting_inputs({"output_dir", run_dir}, {{"model", c.model_dir}, {"data.path", c.data_path}});
  const fs::path run(run_dir);
  const std::vector<NamedPath> inputs = {{"lora.init_adapter", c.init_adapter},
                                         {"data.labels_file", c.labels_file},
                                         {"data.latent_cache", c.latent_cache},
                                         {"the config", resuming ? "" : config_source}};
  for (const char* written : {"config.json", "metrics.jsonl", "config_history.jsonl", "adapter", "adapter_ema", "unet",
                              "checkpoints", "samples"})
    for (const NamedPath& in : inputs)
      if (!in.path.empty() && path_within(in.path, (run / written).string()))
        throw UsageError(in.what + " " + in.path + " lies where the run writes " + (run / written).string() +
                         "; lcdkit never overwrites an input");
  refuse_overwriting_inputs({"data.latent_cache", c.latent_cache},
                            {{"model", c.model_dir}, {"lora.init_adapter", c.init_adapter}, {"data.labels_file", c.labels_file},
                             {"the config", config_source}});
}

void Trainer::State::load_inputs() {
  const TrainConfig& c = config;
  unet = load_unet((fs::path(c.model_dir) / "unet").string());
  vae = load_autoencoder((fs::path(c.model_dir) / "vae").string());
  const fs::path sched = fs::path(c.model_dir) / "scheduler" / "scheduler_config.json";
  schedule = fs::exists(sched) ? NoiseSchedule::from_config(read_json_file(sched.string()), sched.string())
                               : NoiseSchedule::scaled_linear();
  if (vae->config.latent_channels != unet->config.in_channels)
    throw ConfigError(c.model_dir + ": the autoencoder makes " + std::to_string(vae->config.latent_channels) +
                      " latent channels but the UNet takes " + std::to_string(unet->config.in_channels));
  data = load_training_data(c, *vae, unet->config.cross_attention_dim);
  for (int64_t label : c.samples_labels)
    if (label >= data.unconditional_row())
      throw ConfigError(c.source_path + ": \"samples.labels\" = " + c.resolved["samples"]["labels"].dump() + ": " +
                        std::to_string(label) + " has no row in the model's condition table (" +
                        std::to_string(data.unconditional_row()) + " classes)");
  const Shape& lat = data.cache.latents.shape();  // (N, C, h, w)
  if (lat[1] != unet->config.in_channels || lat[2] != unet->config.sample_size || lat[3] != unet->config.sample_size)
    throw FormatError(c.latent_cache + ": latents " + lat.str() + " do not fit the UNet (" +
                      std::to_string(unet->config.in_channels) + " channels, sample_size " +
                      std::to_string(unet->config.sample_size) + ")");
  if (data.size() / c.batch_size < 1)
    throw ConfigError(c.source_path + ": \"train.batch_size\" = " + std::to_string(c.batch_size) + ": larger than the " +
                      std::to_string(data.size()) + " training images");
  rng = Rng(c.seed);
  if (c.lora_enabled) {
    // Guidance-conditioned LCD trains time_embedding.cond_proj (zero at the start: the student starts as the
    // teacher) with the factors.
    const std::string cond_proj = "time_embedding.cond_proj.weight";
    if (c.lcd.guidance_embedding && unet->config.time_cond_proj_dim == 0) unet->add_time_cond_proj(c.lcd.guidance_embedding_dim);
    try {
      if (c.init_adapter.empty()) {
        lora = std::make_unique<TrainableLora>(*unet, c.lora, rng,
                                               c.lcd.guidance_embedding ? std::vector<std::string>{cond_proj} : std::vector<std::string>{});
      } else {
        LoraAdapter init = read_lora(c.init_adapter);
        prepare_unet_for(*unet, init);
        if (c.lcd.guidance_embedding && !init.full_weights.count(cond_proj))
          init.full_weights[cond_proj] = Tensor::zeros(unet->time_embedding.cond_proj->weight.shape());
        lora = std::make_unique<TrainableLora>(*unet, init);
      }
    } catch (const FormatError& e) {
      const std::string m = e.what();
      throw FormatError(c.init_adapter.empty() || m.find(c.init_adapter) != std::string::npos ? m : c.init_adapter + ": " + m);
    }
    params = &lora->online();
  } else {
    std::vector<std::pair<std::string, Tensor>> all;
    for (auto& [name, t] : unet->named_parameters()) all.emplace_back(name, *t);
    full = FlatParameters(all);
    params = &full;
  }
  if (world().size() > 1) params->keep_wide_gradients();
  optimizer = std::make_unique<AdamW>(*params, AdamWConfig{c.beta1, c.beta2, c.adam_eps, c.weight_decay});
  if (c.guidance_embedding_lr_scale != 1.0)
    for (const FlatParameters::Entry& e : params->entries())
      if (e.name == "time_embedding.cond_proj.weight")
        optimizer->scale_lr(e.offset, e.offset + e.tensor.numel(), c.guidance_embedding_lr_scale);
  objective = find_objective(c.objective)->make(c, ObjectiveContext{*unet, lora.get(), *params, schedule, data});
  batcher = std::make_unique<Batcher>(data.size(), c.batch_size, c.seed);
}

// A checkpoint fits this run: same parameters, a batcher position this data can have, a readable generator
// state and config. Checked before any state is touched.
void Trainer::State::check_against_run(const TrainingState& t, const std::string& origin) const {
  if (t.layout != layout_of(*params) || static_cast<int64_t>(t.params.size()) != params->size())
    throw FormatError(origin + ": the checkpoint's parameters do not match this run's (different model or LoRA)");
  if (t.batcher_position > batcher->batches_per_epoch())
    throw FormatError(origin + ": batcher position " + std::to_string(t.batcher_position) + " is past the " +
                      std::to_string(batcher->batches_per_epoch()) + " batches of an epoch of this data");
  Rng probe;
  try {
    probe.set_state(t.rng_state);
    (void)nlohmann::json::parse(t.config_json).at("train");
  } catch (const std::exception& e) {
    throw FormatError(origin + ": corrupt generator state or config (" + json_error_text(e) + ")");
  }
}

std::string Trainer::State::resume_from_checkpoint(nlohmann::json* changes) {
  // The newest intact checkpoint. After a non-finite loss (an emergency checkpoint marked "nonfinite", holding the
  // state that led to it) the newest regular checkpoint from before that state, or, when there is none, the
  // run's start (the fresh state built from the seed): resuming from the diverging state itself would meet the
  // same non-finite loss again whatever the new settings.
  std::string chosen;
  TrainingState t;
  int64_t nonfinite_step = -1;
  std::vector<std::string> skipped;  // reported when an older checkpoint is used, or in the error when none is
  for (const std::string& path : checkpoints_newest_first(checkpoint_dir)) {
    TrainingState candidate;
    try {
      candidate = load_checkpoint(path);
      check_against_run(candidate, path);
    } catch (const Error& e) {
      skipped.push_back(e.what());
      continue;
    }
    if (candidate.stopped_by == "nonfinite") {
      if (nonfinite_step < 0) {
        nonfinite_step = candidate.step;
        std::cerr << "lcd-train: " << path << " holds the state that led to a non-finite loss; looking for an earlier "
                  << "regular checkpoint\n";
      }
      continue;
    }
    if (nonfinite_step >= 0 && (!candidate.stopped_by.empty() || candidate.step >= nonfinite_step)) continue;
    chosen = path;
    t = std::move(candidate);
    break;
  }
  if (chosen.empty() && nonfinite_step >= 0) {
    std::cerr << "lcd-train: no regular checkpoint before step " << nonfinite_step << "; starting the run again from step 0\n";
    return "the start of the run";
  }
  if (chosen.empty())
    throw FormatError("--resume " + run_dir + ": no intact checkpoint in " + checkpoint_dir +
                      (skipped.empty() ? "" : " (newest: " + skipped.front() + ")"));
  for (const auto& why : skipped) std::cerr << "lcd-train: skipping a damaged checkpoint: " << why << "\n";

  const nlohmann::json saved_config = nlohmann::json::parse(t.config_json);
  const auto saved = computation_keys(saved_config);
  const auto now = computation_keys(config.resolved);
  if (saved != now) {
    const std::string key = first_difference(saved, now).empty() ? first_difference(now, saved) : first_difference(saved, now);
    throw ConfigError("--resume: the config differs from the run's in \"" + key + "\" (only train.steps, "
                      "train.time_limit_minutes, threads, checkpoint, log, samples, optim.lr, optim.max_grad_norm and "
                      "lcd.guidance_min/max may change)");
  }
  for (const auto& [group, key] : kAdjustableOnResume) {
    const nlohmann::json before = saved_config.contains(group) ? saved_config[group].value(key, nlohmann::json()) : nlohmann::json();
    const nlohmann::json after = config.resolved[group][key];
    if (before != after) {
      (*changes)[std::string(group) + "." + key] = {before, after};
      std::cerr << "lcd-train: " << group << "." << key << " changes from " << before.dump() << " to " << after.dump()
                << " on resume (recorded in config_history.jsonl)\n";
    }
  }
  restore(t);
  return chosen;
}

void Trainer::State::prepare_run_dir(const std::string& resumed_from, const nlohmann::json& changes) const {
  const fs::path run(run_dir);
  fs::create_directories(run);
  for (const char* sub : {"", "checkpoints", "adapter", "adapter_ema", "unet", "samples"}) remove_stale_temp_files((run / sub).string());
  if (resumed_from.empty()) {
    write_file_atomically((run / "metrics.jsonl").string(), "");  // a run killed before its first checkpoint left these
  } else {
    // The metrics of the steps up to the checkpoint only; a line cut by a kill is dropped.
    const std::string metrics = (run / "metrics.jsonl").string();
    std::ifstream in(metrics);
    std::string kept, line;
    int64_t cut = 0;
    while (std::getline(in, line)) {
      if (line.empty()) continue;
      const nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
      if (j.is_discarded() || !j.is_object() || !j.contains("step") || !j["step"].is_number_integer()) {
        ++cut;
        continue;
      }
      if (j["step"].get<int64_t>() <= step) kept += line + "\n";
    }
    if (cut) std::cerr << "lcd-train: dropped " << cut << " unreadable line(s) of " << metrics << " (cut by a kill)\n";
    write_file_atomically(metrics, kept);
  }
  // Every start and resume, with the settings that changed, in config_history.jsonl.
  const std::string history = (run / "config_history.jsonl").string();
  std::string lines;
  if (std::ifstream in(history); in) lines.assign(std::istreambuf_iterator<char>(in), {});
  if (!lines.empty() && lines.back() != '\n') lines += "\n";
  nlohmann::json entry = {{"event", resumed_from.empty() ? "start" : "resume"}, {"step", step}};
  if (world().size() > 1) entry["processes"] = world().size();
  if (!resumed_from.empty()) entry["checkpoint"] = fs::path(resumed_from).filename().string();  // or "the start of the run"
  if (!changes.empty()) entry["changed"] = changes;
  write_file_atomically(history, lines + entry.dump() + "\n");
  write_file_atomically((run / "config.json").string(), config.resolved.dump(2) + "\n");
}

Trainer::~Trainer() = default;

TrainingState Trainer::State::snapshot(bool last_good) const {
  TrainingState t;
  t.step = step;
  t.adam_steps = optimizer->steps();
  t.rng_state = last_good ? good_rng : rng.state();
  t.batcher_epoch = last_good ? good_epoch : batcher->epoch();
  t.batcher_position = last_good ? good_position : batcher->position();
  t.config_json = config.resolved.dump();
  t.layout = layout_of(*params);
  const int64_t n = params->size();
  t.params.assign(params->values(), params->values() + n);
  if (lora) t.ema.assign(lora->ema_values(), lora->ema_values() + n);
  else t.ema = t.params;
  t.adam_m.assign(optimizer->first_moment(), optimizer->first_moment() + n);
  t.adam_v.assign(optimizer->second_moment(), optimizer->second_moment() + n);
  return t;
}

uint64_t Trainer::State::state_hash() const {
  uint64_t h = 1469598103934665603ull;  // FNV-1a
  auto mix = [&h](const void* data, size_t bytes) {
    for (size_t i = 0; i < bytes; ++i) h = (h ^ static_cast<const unsigned char*>(data)[i]) * 1099511628211ull;
  };
  const size_t n = static_cast<size_t>(params->size()) * sizeof(float);
  mix(params->values(), n);
  if (lora) mix(lora->ema_values(), n);
  mix(optimizer->first_moment(), n);
  mix(optimizer->second_moment(), n);
  const std::string r = rng.state();
  mix(r.data(), r.size());
  mix(&step, sizeof step);
  return h;
}

void Trainer::State::restore(const TrainingState& t) {
  std::copy(t.params.begin(), t.params.end(), params->values());
  if (lora) std::copy(t.ema.begin(), t.ema.end(), lora->ema_values());
  std::copy(t.adam_m.begin(), t.adam_m.end(), optimizer->first_moment());
  std::copy(t.adam_v.begin(), t.adam_v.end(), optimizer->second_moment());
  optimizer->set_steps(t.adam_steps);
  rng.set_state(t.rng_state);
  batcher->restore(t.batcher_epoch, t.batcher_position);
  step = t.step;
}

// The processes' shares of the batch-mean losses, summed.
void Trainer::State::sum_losses_over_processes(StepLosses* l) {
  if (world().size() == 1) return;
  std::vector<double> v = {l->loss};
  for (const auto& field : l->reported) v.push_back(field.second);
  world().sum(v.data(), static_cast<int64_t>(v.size()), "summing the losses");
  l->loss = v[0];
  for (size_t i = 0; i < l->reported.size(); ++i) l->reported[i].second = v[i + 1];
}

// The processes' gradients summed in double from their unrounded part sums and rounded once, as one process
// rounds the sum of the same parts: with the same parts (B/N a multiple of the part size), N processes give
// one process's gradients (train/distributed.h).
void Trainer::State::sum_gradients_over_processes() {
  Communicator& comm = world();
  if (comm.size() == 1) return;
  const int64_t n = params->size();
  float* g = params->grads();
  double* wide = params->wide_grads();  // kept since load_inputs
  for (int64_t k = 0; k < n; ++k) wide[k] += g[k];  // a batch too small to cut wrote its one part into g
  comm.sum(wide, n, "summing the gradients");
  for (int64_t k = 0; k < n; ++k) g[k] = static_cast<float>(wide[k]);
}

Trainer::State::StepResult Trainer::State::one_step() {
  const TrainConfig& c = config;
  Communicator& comm = world();
  const std::vector<int64_t> idx = batcher->next();                 // the same batch on every process
  Tensor z0 = gather_latents(data, idx, c.sample_posterior, rng);  // (B, C, H, W)
  StepResult r{};
  // This process's rows of the batch (all of them in a one-process run); their losses and gradients are their
  // share of the batch mean, so the sums over the processes are the batch's.
  const int64_t b = z0.size(0), p = comm.size(), k = comm.rank();
  const BatchRows rows{b * k / p, b * (k + 1) / p - b * k / p};
  on_every_process([&] {
    params->zero_grad();
    r.losses = objective->loss_and_gradients(z0, gather_labels(data, idx), rng, rows);
  });
  sum_losses_over_processes(&r.losses);
  sum_gradients_over_processes();
  const double loss = r.losses.loss;
  if (!std::isfinite(loss))
    throw NonFiniteError("step " + std::to_string(step + 1) + ": the loss is " + std::to_string(loss) + kNonFiniteAdvice);
  r.grad_norm = c.max_grad_norm > 0 ? params->clip_grad_norm(c.max_grad_norm) : params->grad_norm();
  if (!std::isfinite(r.grad_norm))
    throw NonFiniteError("step " + std::to_string(step + 1) + ": the gradient norm is " + std::to_string(r.grad_norm) +
                         kNonFiniteAdvice);
  r.lr = learning_rate(c.lr_schedule, c.lr, c.min_lr, c.warmup_steps, c.steps, step + 1);
  crash_point("step");  // gradients computed, weights not yet updated
  optimizer->step(r.lr);
  if (lora) lora->update_ema(objective->ema_decay());
  return r;
}

void Trainer::State::write_samples(const std::string& tag) {
  const TrainConfig& c = config;
  std::vector<int64_t> rows;
  for (int64_t label : c.samples_labels)  // checked against the condition table at load
    for (int64_t k = 0; k < c.samples_per_label; ++k) rows.push_back(label);
  if (rows.empty()) return;
  const int64_t n = static_cast<int64_t>(rows.size());
  const fs::path dir = fs::path(run_dir) / "samples";
  fs::create_directories(dir);
  NoGradGuard g;
  Tensor cond = embedding(data.cond_table, rows);
  Tensor uncond = embedding(data.cond_table, {data.unconditional_row()});
  if (lora) lora->use(TrainableLora::Mode::kStudent);
  const int64_t size = unet->config.sample_size;
  auto render = [&](const std::string& sampler, int steps, double guidance, const std::string& name) {
    BatchNoise noise(c.samples_seed, 0, n);
    Tensor z = noise.draw(Shape{n, unet->config.in_channels, size, size});
    Tensor latents = find_sampler(sampler).run(schedule, unet_denoiser(*unet, {cond, uncond, guidance}), z, {steps, 0.0, &noise});
    Tensor images = vae->decode(scale(latents, 1.0 / vae->config.scaling_factor));
    write_png((dir / name).string(), image_grid(images, static_cast<int>(c.samples_per_label)));
  };
  for (const SampleGrid& grid : objective->sample_grids())
    render(grid.sampler, grid.steps, grid.guidance, tag + "-" + grid.sampler + std::to_string(grid.steps) + ".png");
}

void Trainer::State::export_results() {
  if (lora) {
    auto write_all = [&](const LoraAdapter& a, const std::string& sub) {
      const fs::path dir = fs::path(run_dir) / sub;
      fs::create_directories(dir);
      LoraAdapter tagged = a;
      tagged.metadata["lcdkit.objective"] = config.objective;
      tagged.metadata["lcdkit.step"] = std::to_string(step);
      tagged.metadata["lcdkit.base_model"] = config.model_dir;
      // kohya's ss_base_model_version: the Stable Diffusion version where the UNet is one, else the model's name.
      const std::string sd = kohya_base_model_version(unet->config);
      fs::path model = fs::path(config.model_dir).lexically_normal();
      if (model.filename().empty()) model = model.parent_path();  // "models/fmnist-ldm-v1/"
      tagged.metadata["lcdkit.base_model_version"] = sd.empty() ? model.filename().string() : sd;
      for (const auto& [key, value] : objective->adapter_metadata()) tagged.metadata[key] = value;
      // One folder that diffusers' load_lora_weights (pytorch_lora_weights.safetensors) and PEFT's
      // PeftModel.from_pretrained (adapter_model.safetensors + adapter_config.json) both load as is.
      write_lora((dir / "pytorch_lora_weights.safetensors").string(), tagged, LoraFormat::kDiffusers);
      write_lora(dir.string(), tagged, LoraFormat::kPeft);
      write_lora((dir / "adapter_kohya.safetensors").string(), tagged, LoraFormat::kKohya);
      write_lora((dir / "adapter.h5").string(), tagged, LoraFormat::kHdf5);
    };
    write_all(lora->adapter(false), "adapter");
    if (objective->ema_decay() > 0) write_all(lora->adapter(true), "adapter_ema");
  } else {
    save_module(*unet, unet->config.raw, (fs::path(run_dir) / "unet").string());
  }
}

// Rank 0's records of a finished step: metrics.jsonl, the progress line, checkpoints and sample grids.
void Trainer::State::after_step(const StepResult& r, double step_time, std::ofstream& metrics, int64_t* last_checkpoint) {
  const TrainConfig& c = config;
  nlohmann::json line = {{"step", step}, {"loss", r.losses.loss}, {"grad_norm", r.grad_norm}, {"lr", r.lr},
                         {"step_time", step_time}};
  for (const auto& [key, value] : r.losses.reported) line[key] = value;
  if (world().size() > 1) line["comm_time"] = r.comm_time;
  const std::string text = line.dump() + "\n";
  metrics << text.substr(0, text.size() / 2);
  if (crash_point_armed("metrics-line")) metrics.flush();
  crash_point("metrics-line");  // half a line on disk
  metrics << text.substr(text.size() / 2);
  const double done = static_cast<double>(step - progress.first_step);
  const double elapsed = std::chrono::duration<double>(Clock::now() - progress.start).count();
  const double rate = done / elapsed;
  // The ETA is the end of the run, or of train.time_limit_minutes when that comes first (with the step the run
  // will then have reached).
  double remaining = (c.steps - step) / std::max(rate, 1e-9);
  std::string eta_note;
  if (c.time_limit_minutes > 0 && 60.0 * c.time_limit_minutes - elapsed < remaining) {
    remaining = std::max(0.0, 60.0 * c.time_limit_minutes - elapsed);
    eta_note = " (time limit, about step " + std::to_string(std::min<int64_t>(c.steps, step + int64_t(remaining * rate))) + ")";
  }
  char line_text[320];
  std::snprintf(line_text, sizeof line_text, "step %lld/%lld | loss %.5f | grad %.3f | lr %.2e | %.2f it/s | %s elapsed | ETA %s%s",
                static_cast<long long>(step), static_cast<long long>(c.steps), r.losses.loss, r.grad_norm, r.lr, rate,
                format_duration(elapsed).c_str(), format_duration(remaining).c_str(), eta_note.c_str());
  if (step % c.log_every == 0 || step == c.steps) {
    metrics.flush();
    if (progress.tty) {
      std::cerr << "\r" << line_text << "\033[K\n";
    } else {  // a log file or pipe: each line with the time of day
      const std::time_t now = std::time(nullptr);
      char stamp[32];
      std::strftime(stamp, sizeof stamp, "%Y-%m-%d %H:%M:%S", std::localtime(&now));
      std::cerr << "[" << stamp << "] " << line_text << "\n";
    }
  } else if (progress.tty) {
    std::cerr << "\r" << line_text << "\033[K" << std::flush;
  }
  if (step % c.checkpoint_every == 0) {
    metrics.flush();  // every step a checkpoint holds is in metrics.jsonl before the checkpoint exists
    write_metrics_csv(run_dir);
    save_checkpoint(checkpoint_dir, snapshot(false), c.checkpoint_keep);
    *last_checkpoint = step;
  }
  if (c.samples_every > 0 && step % c.samples_every == 0) {
    char tag[32];
    std::snprintf(tag, sizeof tag, "step-%06lld", static_cast<long long>(step));
    write_samples(tag);
  }
}

int64_t Trainer::run() {
  State& s = *s_;
  const TrainConfig& c = s.config;
  Communicator& comm = world();
  std::signal(SIGINT, request_stop);
  std::signal(SIGTERM, request_stop);
  comm.set_stop_flag(&g_stop_requested);
  std::ofstream metrics;
  if (comm.is_root()) metrics.open((fs::path(s.run_dir) / "metrics.jsonl").string(), std::ios::app);
  s.progress = {Clock::now(), s.step, static_cast<bool>(isatty(STDERR_FILENO))};
  std::cerr << "lcd-train: " << c.objective << " on " << s.data.size() << " latents, " << s.params->size()
            << " trainable parameters, batch " << c.batch_size << ", steps " << s.step << " → " << c.steps << ", "
            << (comm.size() > 1 ? std::to_string(comm.size()) + " processes × " : "") << num_threads() << " threads, "
            << c.resolved["train"]["precision"].get<std::string>() << "; run directory " << s.run_dir << "\n";
  std::string stop_reason;
  int64_t last_checkpoint = s.step;
  try {
    while (s.step < c.steps) {
      // Every process stops at the same step: the largest wish wins.
      enum { kGoOn, kTimeLimit, kInterrupted };
      const double elapsed = std::chrono::duration<double>(Clock::now() - s.progress.start).count();
      const int wish = g_stop_requested                                                     ? kInterrupted
                       : c.time_limit_minutes > 0 && elapsed > 60.0 * c.time_limit_minutes ? kTimeLimit
                                                                                            : kGoOn;
      const int stop = comm.agree(wish, nullptr);
      if (stop == kInterrupted) {
        stop_reason = "interrupted";
        break;
      }
      if (stop == kTimeLimit) {
        char reason[64];
        std::snprintf(reason, sizeof reason, "time limit of %g min reached", c.time_limit_minutes);
        stop_reason = reason;
        break;
      }
      const auto t0 = Clock::now();
      State::StepResult r = s.one_step();
      r.comm_time = comm.take_wait_seconds();  // this step's stop agreement and sums
      ++s.step;
      s.good_rng = s.rng.state();
      s.good_epoch = s.batcher->epoch();
      s.good_position = s.batcher->position();
      const double step_time = std::chrono::duration<double>(Clock::now() - t0).count();
      if (s.step % c.checkpoint_every == 0)
        comm.check_identical(s.state_hash(), "the training state after step " + std::to_string(s.step));
      on_every_process([&] {
        if (comm.is_root()) s.after_step(r, step_time, metrics, &last_checkpoint);
      });
    }
  } catch (const std::exception& e) {
    std::string where = "the state after step " + std::to_string(s.step);
    if (comm.is_root()) {
      metrics.flush();
      TrainingState last_good = s.snapshot(true);
      last_good.stopped_by = dynamic_cast<const NonFiniteError*>(&e) ? "nonfinite" : "error";
      where += " is saved in " + save_checkpoint(s.checkpoint_dir, last_good, c.checkpoint_keep);
    }
    throw TrainingError(std::string(e.what()) + "; " + where + " (resume with --resume " + s.run_dir + ")");
  }
  on_every_process([&] {
    if (!comm.is_root()) return;
    metrics.flush();
    write_metrics_csv(s.run_dir);
    if (last_checkpoint != s.step || s.step == s.progress.first_step)
      save_checkpoint(s.checkpoint_dir, s.snapshot(false), c.checkpoint_keep);
    s.write_samples("final");
    s.export_results();
  });
  if (!stop_reason.empty())
    std::cerr << "lcd-train: stopped at step " << s.step << " (" << stop_reason << "); continue with --resume " << s.run_dir << "\n";
  std::cerr << "lcd-train: done at step " << s.step << "; adapters and samples in " << s.run_dir << "\n";
  return s.step;
}

}  // namespace lcd
