// The objective table (see objective.h).
#include "train/objective.h"

#include "autograd/errors.h"
#include "autograd/ops.h"
#include "train/diffusion_objective.h"
#include "train/lcd_objective.h"

namespace lcd {

namespace {

bool all_rows(BatchRows rows, int64_t n) { return rows.begin == 0 && rows.count == n; }
template <typename T> std::vector<T> rows_of(const std::vector<T>& v, BatchRows rows) {
  return {v.begin() + rows.begin, v.begin() + rows.begin + rows.count};
}
Tensor rows_of(const Tensor& x, BatchRows rows) {
  NoGradGuard g;
  return slice(x, 0, rows.begin, rows.count);
}

// LCD, PCM and LCF: the consistency step of lcd_objective.h with the objective's settings.
class ConsistencyObjective : public Objective {
 public:
  ConsistencyObjective(const TrainConfig& c, const ObjectiveContext& x, LcdSettings settings, std::string sampler)
      : c_(c), x_(x), settings_(settings), sampler_(std::move(sampler)) {}

  StepLosses loss_and_gradients(const Tensor& z0, std::vector<int64_t> labels, Rng& rng, BatchRows rows) override {
    const int64_t n = z0.size(0), uncond_row = x_.data.unconditional_row();
    LcdBatch b;
    b.z0 = z0;
    // Step 1's j and step 2's guidance scale per sample, then ε (this order keeps runs reproducible).
    for (int64_t i = 0; i < n; ++i) {
      b.j.push_back(draw_grid_index(rng, settings_));
      b.guidance.push_back(c_.guidance_min + (c_.guidance_max - c_.guidance_min) * rng.uniform());
    }
    b.eps = rng.normal_tensor(z0.shape());
    if (c_.lcd_cond_dropout > 0)  // the unconditional row for every network: the adapter keeps CFG working
      for (int64_t i = 0; i < n; ++i)
        if (rng.uniform() < c_.lcd_cond_dropout) labels[i] = uncond_row;
    if (!all_rows(rows, n)) {
      b.z0 = rows_of(z0, rows);     // (B_r, C, H, W)
      b.eps = rows_of(b.eps, rows);  // (B_r, C, H, W)
      b.j = rows_of(b.j, rows);
      b.guidance = rows_of(b.guidance, rows);
      labels = rows_of(labels, rows);
      b.weight = static_cast<double>(rows.count) / static_cast<double>(n);
    }
    {
      NoGradGuard g;
      b.cond = embedding(x_.data.cond_table, labels);                                          // (B_r, L, D)
      b.uncond = embedding(x_.data.cond_table, std::vector<int64_t>(labels.size(), uncond_row));  // (B_r, L, D)
    }
    const LcdLosses l = lcd_loss_and_gradients(x_.unet, *x_.lora, x_.schedule, settings_, b);
    return {l.loss, {{"loss_huber", l.loss_huber}, {"loss_l2", l.loss_l2}}};
  }
  double ema_decay() const override { return c_.ema_decay; }
  std::vector<SampleGrid> sample_grids() const override {
    std::vector<SampleGrid> grids;
    // A guidance-conditioned adapter is shown at the middle of its trained range; the others have it built in.
    const double s = settings_.guidance_embedding ? 0.5 * (c_.guidance_min + c_.guidance_max) : 1.0;
    if (settings_.phases > 0) return {{sampler_, settings_.phases, s}};
    for (int steps : c_.samples_lcm_steps) grids.push_back({sampler_, steps, s});
    return grids;
  }
  std::vector<std::pair<std::string, std::string>> adapter_metadata() const override {
    if (settings_.phases == 0) return {};
    return {{"lcdkit.pcm_phases", std::to_string(settings_.phases)}};
  }

 private:
  const TrainConfig& c_;
  ObjectiveContext x_;
  LcdSettings settings_;
  std::string sampler_;
};

class DiffusionTraining : public Objective {
 public:
  DiffusionTraining(const TrainConfig& c, const ObjectiveContext& x) : c_(c), x_(x) {}

  StepLosses loss_and_gradients(const Tensor& z0, std::vector<int64_t> labels, Rng& rng, BatchRows rows) override {
    const int64_t n = z0.size(0);
    DiffusionBatch b;
    b.z0 = z0;
    for (int64_t i = 0; i < n; ++i) {
      b.t.push_back(static_cast<int>(rng.uniform_int(x_.schedule.num_train_timesteps())));
      if (rng.uniform() < c_.cond_dropout) labels[i] = x_.data.unconditional_row();
    }
    b.eps = rng.normal_tensor(z0.shape());
    if (!all_rows(rows, n)) {
      b.z0 = rows_of(z0, rows);      // (B_r, C, H, W)
      b.eps = rows_of(b.eps, rows);  // (B_r, C, H, W)
      b.t = rows_of(b.t, rows);
      labels = rows_of(labels, rows);
      b.weight = static_cast<double>(rows.count) / static_cast<double>(n);
    }
    {
      NoGradGuard g;
      b.cond = embedding(x_.data.cond_table, labels);  // (B, L, D)
    }
    if (x_.lora) x_.lora->use(TrainableLora::Mode::kStudent);
    return {diffusion_loss_and_gradients(x_.unet, x_.schedule, b, x_.params), {}};
  }
  double ema_decay() const override { return 0.0; }
  std::vector<SampleGrid> sample_grids() const override {
    return {{"ddim", c_.samples_teacher_steps, c_.samples_guidance}};
  }

 private:
  const TrainConfig& c_;
  ObjectiveContext x_;
};

// The consistency step with the config's lcd.* settings, PCM's phases (0: LCD's parameterisation) and LCF's
// teacher-free target; the sampler its grids use.
std::unique_ptr<Objective> consistency(const TrainConfig& c, const ObjectiveContext& x, int phases, bool teacher_free,
                                       const char* sampler) {
  LcdSettings s = c.lcd;
  s.phases = phases;
  s.teacher_free = teacher_free;
  return std::make_unique<ConsistencyObjective>(c, x, s, sampler);
}

std::unique_ptr<Objective> make_lcd(const TrainConfig& c, const ObjectiveContext& x) { return consistency(c, x, 0, false, "lcm"); }
std::unique_ptr<Objective> make_pcm(const TrainConfig& c, const ObjectiveContext& x) {
  return consistency(c, x, c.pcm_phases, false, "pcm");
}
std::unique_ptr<Objective> make_lcf(const TrainConfig& c, const ObjectiveContext& x) { return consistency(c, x, 0, true, "lcm"); }

std::unique_ptr<Objective> make_diffusion(const TrainConfig& c, const ObjectiveContext& x) {
  return std::make_unique<DiffusionTraining>(c, x);
}

}  // namespace

const std::vector<ObjectiveSpec>& objective_table() {
  static const std::vector<ObjectiveSpec> table = {
      {"lcd", "latent consistency distillation (LCM-LoRA; lcd.* keys)", true, false, make_lcd},
      {"pcm", "phased consistency distillation: pcm.phases phases, each point mapped to its phase's lower edge (lcd.* keys)",
       true, false, make_pcm},
      {"lcf", "latent consistency fine-tuning on your own data, no teacher, from a distilled lora.init_adapter (an EMA "
              "target, lcd.ema_decay > 0, is advised)",
       true, true, make_lcf},
      {"diffusion", "ε-prediction training: a teacher (lora.enabled false) or a style LoRA (diffusion.* keys)", false, false,
       make_diffusion},
  };
  return table;
}

const ObjectiveSpec* find_objective(const std::string& name) {
  for (const ObjectiveSpec& spec : objective_table())
    if (name == spec.name) return &spec;
  return nullptr;
}

std::string objective_names() {
  std::string out;
  const auto& table = objective_table();
  for (size_t i = 0; i < table.size(); ++i)
    out += std::string(i == 0 ? "" : i + 1 == table.size() ? " or " : ", ") + "\"" + table[i].name + "\"";
  return out;
}

}  // namespace lcd
