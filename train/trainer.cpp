// The training loop (see trainer.h).
#include "train/trainer.h"

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

#include "autograd/atomic_file.h"
#include "autograd/errors.h"
#include "autograd/threads.h"
#include "infer/tools/cli.h"
#include "datasets/batcher.h"
#include "datasets/png.h"
#include "infer/io/lora_io.h"
#include "infer/io/model_io.h"
#include "infer/nn/config_check.h"
#include "infer/samplers.h"
#include "train/adamw.h"
#include "train/checkpoint.h"
#include "train/diffusion_objective.h"
#include "train/lr_schedule.h"
#include "train/training_data.h"

namespace lcd {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

std::atomic<bool> g_stop_requested{false};
extern "C" void request_stop(int) { g_stop_requested = true; }

// Keys that may change between a run and its resume without changing the computation.
nlohmann::json computation_keys(nlohmann::json c) {
  for (const char* k : {"output_dir", "threads", "checkpoint", "log", "samples"}) c.erase(k);
  c["train"].erase("steps");
  c["train"].erase("time_limit_minutes");
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
  std::unique_ptr<Batcher> batcher;
  int64_t step = 0;
  // The state as of the last completed step, for emergency checkpoints.
  std::string good_rng;
  int64_t good_epoch = 0, good_position = 0;

  struct StepResult {
    double loss, loss_huber, loss_l2, grad_norm, lr;
  };

  TrainingState snapshot(bool last_good) const;
  void restore(const TrainingState& t, const std::string& origin);
  StepResult one_step();
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
  if (resume_dir.empty() && !latest_checkpoint(s.checkpoint_dir).empty())
    throw ConfigError("output_dir \"" + s.run_dir + "\" already holds a run; continue it with --resume " + s.run_dir +
                      " or choose another output_dir");
  if (!resume_dir.empty() && latest_checkpoint(s.checkpoint_dir).empty())
    throw ConfigError("--resume " + resume_dir + ": no checkpoint in " + s.checkpoint_dir);
  fs::create_directories(s.run_dir);

  s.unet = load_unet((fs::path(c.model_dir) / "unet").string());
  s.vae = load_autoencoder((fs::path(c.model_dir) / "vae").string());
  const fs::path sched = fs::path(c.model_dir) / "scheduler" / "scheduler_config.json";
  s.schedule = fs::exists(sched) ? NoiseSchedule::from_config(read_json_file(sched.string()), sched.string())
                                 : NoiseSchedule::scaled_linear();
  s.data = load_training_data(c, *s.vae);
  s.rng = Rng(c.seed);
  if (c.lora_enabled) {
    s.lora = c.init_adapter.empty() ? std::make_unique<TrainableLora>(*s.unet, c.lora, s.rng)
                                    : std::make_unique<TrainableLora>(*s.unet, read_lora(c.init_adapter));
    s.params = &s.lora->online();
  } else {
    std::vector<std::pair<std::string, Tensor>> all;
    for (auto& [name, t] : s.unet->named_parameters()) all.emplace_back(name, *t);
    s.full = FlatParameters(all);
    s.params = &s.full;
  }
  s.optimizer = std::make_unique<AdamW>(*s.params, AdamWConfig{c.beta1, c.beta2, c.adam_eps, c.weight_decay});
  s.batcher = std::make_unique<Batcher>(s.data.size(), c.batch_size, c.seed);

  const std::string config_path = (fs::path(s.run_dir) / "config.json").string();
  if (!resume_dir.empty()) {
    const std::string ckpt = latest_checkpoint(s.checkpoint_dir);
    TrainingState t = load_checkpoint(ckpt);
    const auto saved = computation_keys(nlohmann::json::parse(t.config_json));
    const auto now = computation_keys(c.resolved);
    if (saved != now) {
      const std::string key = first_difference(saved, now).empty() ? first_difference(now, saved) : first_difference(saved, now);
      throw ConfigError("--resume: the config differs from the run's in \"" + key + "\" (only train.steps, "
                        "train.time_limit_minutes, threads, checkpoint, log and samples may change)");
    }
    s.restore(t, ckpt);
    // Keep the metrics of the steps up to the checkpoint only.
    const std::string metrics = (fs::path(s.run_dir) / "metrics.jsonl").string();
    std::ifstream in(metrics);
    std::string kept, line;
    while (std::getline(in, line))
      if (!line.empty() && nlohmann::json::parse(line).value("step", int64_t(0)) <= s.step) kept += line + "\n";
    write_file_atomically(metrics, kept);
    std::cerr << "lcd-train: resumed " << s.run_dir << " at step " << s.step << " from " << ckpt << "\n";
  }
  write_file_atomically(config_path, c.resolved.dump(2) + "\n");
  s.good_rng = s.rng.state();
  s.good_epoch = s.batcher->epoch();
  s.good_position = s.batcher->position();
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

void Trainer::State::restore(const TrainingState& t, const std::string& origin) {
  if (t.layout != layout_of(*params))
    throw FormatError(origin + ": the checkpoint's parameters do not match this run's (different model or LoRA)");
  std::copy(t.params.begin(), t.params.end(), params->values());
  if (lora) std::copy(t.ema.begin(), t.ema.end(), lora->ema_values());
  std::copy(t.adam_m.begin(), t.adam_m.end(), optimizer->first_moment());
  std::copy(t.adam_v.begin(), t.adam_v.end(), optimizer->second_moment());
  optimizer->set_steps(t.adam_steps);
  rng.set_state(t.rng_state);
  batcher->restore(t.batcher_epoch, t.batcher_position);
  step = t.step;
}

Trainer::State::StepResult Trainer::State::one_step() {
  const TrainConfig& c = config;
  const std::vector<int64_t> idx = batcher->next();
  const int64_t n = static_cast<int64_t>(idx.size());
  Tensor z0 = gather_latents(data, idx, c.sample_posterior, rng);
  std::vector<int64_t> labels = gather_labels(data, idx);
  const int64_t uncond_row = data.unconditional_row();
  StepResult r{};
  params->zero_grad();
  if (c.objective == "lcd") {
    LcdBatch b;
    b.z0 = z0;
    for (int64_t i = 0; i < n; ++i) {
      b.j.push_back(static_cast<int>(rng.uniform_int(c.lcd.num_ddim_timesteps)));
      b.guidance.push_back(c.guidance_min + (c.guidance_max - c.guidance_min) * rng.uniform());
    }
    b.eps = rng.normal_tensor(z0.shape());
    {
      NoGradGuard g;
      b.cond = embedding(data.cond_table, labels);
      b.uncond = embedding(data.cond_table, std::vector<int64_t>(n, uncond_row));
    }
    const LcdLosses l = lcd_loss_and_gradients(*unet, *lora, schedule, c.lcd, b);
    r.loss = l.loss;
    r.loss_huber = l.loss_huber;
    r.loss_l2 = l.loss_l2;
  } else {
    DiffusionBatch b;
    b.z0 = z0;
    for (int64_t i = 0; i < n; ++i) {
      b.t.push_back(static_cast<int>(rng.uniform_int(schedule.num_train_timesteps())));
      if (rng.uniform() < c.cond_dropout) labels[i] = uncond_row;
    }
    b.eps = rng.normal_tensor(z0.shape());
    {
      NoGradGuard g;
      b.cond = embedding(data.cond_table, labels);
    }
    if (lora) lora->use(TrainableLora::Mode::kStudent);
    r.loss = diffusion_loss_and_gradients(*unet, schedule, b, *params);
    r.loss_l2 = r.loss;
    r.loss_huber = std::nan("");
  }
  if (!std::isfinite(r.loss))
    throw TrainingError("step " + std::to_string(step + 1) + ": the loss is " + std::to_string(r.loss) +
                        " (try a lower optim.lr or a smaller lcd.guidance_max)");
  r.grad_norm = c.max_grad_norm > 0 ? params->clip_grad_norm(c.max_grad_norm) : params->grad_norm();
  if (!std::isfinite(r.grad_norm))
    throw TrainingError("step " + std::to_string(step + 1) + ": the gradient norm is " + std::to_string(r.grad_norm));
  r.lr = learning_rate(c.lr_schedule, c.lr, c.min_lr, c.warmup_steps, c.steps, step + 1);
  optimizer->step(r.lr);
  if (lora) lora->update_ema(c.objective == "lcd" ? c.ema_decay : 0.0);
  return r;
}

void Trainer::State::write_samples(const std::string& tag) {
  const TrainConfig& c = config;
  std::vector<int64_t> rows;
  for (int64_t label : c.samples_labels) {
    if (label < 0 || label >= data.unconditional_row())
      throw ConfigError("samples.labels: " + std::to_string(label) + " has no row in the model's condition table");
    for (int64_t k = 0; k < c.samples_per_label; ++k) rows.push_back(label);
  }
  if (rows.empty()) return;
  const int64_t n = static_cast<int64_t>(rows.size());
  const fs::path dir = fs::path(run_dir) / "samples";
  fs::create_directories(dir);
  NoGradGuard g;
  Tensor cond = embedding(data.cond_table, rows);
  Tensor uncond = embedding(data.cond_table, {data.unconditional_row()});
  if (lora) lora->use(TrainableLora::Mode::kStudent);
  const int64_t size = unet->config.raw.value("sample_size", 8);
  auto render = [&](const std::string& sampler, int steps, double guidance, const std::string& name) {
    BatchNoise noise(c.samples_seed, 0, n);
    Tensor z = noise.draw(Shape{n, unet->config.in_channels, size, size});
    Tensor latents = run_sampler(sampler, schedule, unet_denoiser(*unet, {cond, uncond, guidance}), z, steps, noise);
    Tensor images = vae->decode(scale(latents, 1.0 / vae->config.scaling_factor));
    write_png((dir / name).string(), image_grid(images, static_cast<int>(c.samples_per_label)));
  };
  if (c.objective == "lcd") {
    for (int steps : c.samples_lcm_steps) render("lcm", steps, 1.0, tag + "-lcm" + std::to_string(steps) + ".png");
  } else {
    render("ddim", c.samples_teacher_steps, c.samples_guidance,
           tag + "-ddim" + std::to_string(c.samples_teacher_steps) + ".png");
  }
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
      write_lora((dir / "pytorch_lora_weights.safetensors").string(), tagged, LoraFormat::kPeft);
      write_lora((dir / "adapter_kohya.safetensors").string(), tagged, LoraFormat::kKohya);
      write_lora((dir / "adapter.h5").string(), tagged, LoraFormat::kHdf5);
      nlohmann::json peft = {{"peft_type", "LORA"}, {"r", config.lora.rank}, {"lora_alpha", config.lora.alpha},
                             {"target_modules", config.lora.targets}, {"init_lora_weights", true}};
      write_file_atomically((dir / "adapter_config.json").string(), peft.dump(2) + "\n");
    };
    write_all(lora->adapter(false), "adapter");
    if (config.objective == "lcd" && config.ema_decay > 0) write_all(lora->adapter(true), "adapter_ema");
  } else {
    save_module(*unet, unet->config.raw, (fs::path(run_dir) / "unet").string());
  }
}

int64_t Trainer::run() {
  State& s = *s_;
  const TrainConfig& c = s.config;
  std::signal(SIGINT, request_stop);
  std::signal(SIGTERM, request_stop);
  const std::string metrics_path = (fs::path(s.run_dir) / "metrics.jsonl").string();
  std::ofstream metrics(metrics_path, std::ios::app);
  const bool tty = isatty(STDERR_FILENO);
  const auto start = Clock::now();
  const int64_t first = s.step;
  std::cerr << "lcd-train: " << c.objective << " on " << s.data.size() << " latents, " << s.params->size()
            << " trainable parameters, batch " << c.batch_size << ", steps " << s.step << " → " << c.steps << ", "
            << num_threads() << " threads, " << c.resolved["train"]["precision"].get<std::string>()
            << "; run directory " << s.run_dir << "\n";
  std::string stop_reason;
  int64_t last_checkpoint = s.step;
  try {
    while (s.step < c.steps) {
      if (g_stop_requested) {
        stop_reason = "interrupted";
        break;
      }
      const double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
      if (c.time_limit_minutes > 0 && elapsed > 60.0 * c.time_limit_minutes) {
        char reason[64];
        std::snprintf(reason, sizeof reason, "time limit of %g min reached", c.time_limit_minutes);
        stop_reason = reason;
        break;
      }
      const auto t0 = Clock::now();
      const State::StepResult r = s.one_step();
      ++s.step;
      s.good_rng = s.rng.state();
      s.good_epoch = s.batcher->epoch();
      s.good_position = s.batcher->position();
      const double step_time = std::chrono::duration<double>(Clock::now() - t0).count();
      nlohmann::json line = {{"step", s.step}, {"loss", r.loss}, {"grad_norm", r.grad_norm}, {"lr", r.lr},
                             {"step_time", step_time}};
      if (c.objective == "lcd") {
        line["loss_huber"] = r.loss_huber;
        line["loss_l2"] = r.loss_l2;
      }
      metrics << line.dump() << "\n";
      const double done = static_cast<double>(s.step - first);
      const double rate = done / std::chrono::duration<double>(Clock::now() - start).count();
      char progress[256];
      std::snprintf(progress, sizeof progress, "step %lld/%lld | loss %.5f | grad %.3f | lr %.2e | %.2f it/s | ETA %s",
                    static_cast<long long>(s.step), static_cast<long long>(c.steps), r.loss, r.grad_norm, r.lr, rate,
                    format_duration((c.steps - s.step) / std::max(rate, 1e-9)).c_str());
      if (s.step % c.log_every == 0 || s.step == c.steps) {
        metrics.flush();
        std::cerr << (tty ? "\r" : "") << progress << (tty ? "\033[K\n" : "\n");
      } else if (tty) {
        std::cerr << "\r" << progress << "\033[K" << std::flush;
      }
      if (s.step % c.checkpoint_every == 0) {
        save_checkpoint(s.checkpoint_dir, s.snapshot(false), c.checkpoint_keep);
        last_checkpoint = s.step;
      }
      if (c.samples_every > 0 && s.step % c.samples_every == 0) {
        char tag[32];
        std::snprintf(tag, sizeof tag, "step-%06lld", static_cast<long long>(s.step));
        s.write_samples(tag);
      }
    }
  } catch (const std::exception& e) {
    metrics.flush();
    const std::string path = save_checkpoint(s.checkpoint_dir, s.snapshot(true), c.checkpoint_keep, true);
    throw TrainingError(std::string(e.what()) + "; the state after step " + std::to_string(s.step) + " is saved in " +
                        path + " (resume with --resume " + s.run_dir + ")");
  }
  metrics.flush();
  if (last_checkpoint != s.step || s.step == first) save_checkpoint(s.checkpoint_dir, s.snapshot(false), c.checkpoint_keep);
  s.write_samples("final");
  s.export_results();
  if (!stop_reason.empty())
    std::cerr << "lcd-train: stopped at step " << s.step << " (" << stop_reason << "); continue with --resume " << s.run_dir << "\n";
  std::cerr << "lcd-train: done at step " << s.step << "; adapters and samples in " << s.run_dir << "\n";
  return s.step;
}

}  // namespace lcd
