// What a training step computes, one objective per row of one table (DESIGN.md §4, §7, §10). The trainer's
// loop knows only this interface: an objective draws its per-sample randomness from the run's generator, adds
// the gradients of the trainable weights into their gradient buffer, and says what the loop needs around it
// (the EMA decay, the metrics it reports, the sample grids it writes). Adding an objective is adding a row.
#pragma once
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "autograd/flat_parameters.h"
#include "autograd/random.h"
#include "infer/nn/unet.h"
#include "infer/schedule.h"
#include "train/config.h"
#include "train/trainable_lora.h"
#include "train/training_data.h"

namespace lcd {

// What every objective evaluates and trains; lora is null when the whole UNet trains.
struct ObjectiveContext {
  const UNet2DConditionModel& unet;
  TrainableLora* lora;
  FlatParameters& params;
  const NoiseSchedule& schedule;
  const TrainingData& data;
};

struct StepLosses {
  double loss = 0;                                        // the optimised loss
  std::vector<std::pair<std::string, double>> reported;  // extra metrics.jsonl fields
};

// One sample grid: sampler (a row of sampler_table) × steps × guidance.
struct SampleGrid {
  std::string sampler;
  int steps;
  double guidance;
};

// The samples [begin, begin + count) of a batch that this process computes (train/distributed.h).
struct BatchRows {
  int64_t begin, count;
};

class Objective {
 public:
  virtual ~Objective() = default;
  // The loss of latents z0 (B, C, H, W) with their labels; gradients added into the trainable weights. Every
  // process draws the randomness of the whole batch (a sample's noise, timestep and guidance do not depend on
  // the number of processes) and computes `rows`, with their share B_r/B of the batch mean (all rows: the loss).
  virtual StepLosses loss_and_gradients(const Tensor& z0, std::vector<int64_t> labels, Rng& rng, BatchRows rows) = 0;
  // μ of θ⁻ ← μθ⁻ + (1 − μ)θ after each step; 0: the target is the online weights (no EMA adapter exported).
  virtual double ema_decay() const = 0;
  virtual std::vector<SampleGrid> sample_grids() const = 0;
  // Extra adapter metadata (e.g. PCM's phases), beside lcdkit.objective and lcdkit.step.
  virtual std::vector<std::pair<std::string, std::string>> adapter_metadata() const { return {}; }
};

struct ObjectiveSpec {
  const char* name;
  const char* doc;
  bool needs_lora;          // trains an adapter (the whole UNet is allowed only where false)
  bool needs_init_adapter;  // starts from a distilled adapter (lora.init_adapter)
  std::unique_ptr<Objective> (*make)(const TrainConfig& config, const ObjectiveContext& context);
};
const std::vector<ObjectiveSpec>& objective_table();
const ObjectiveSpec* find_objective(const std::string& name);  // null when unknown
std::string objective_names();                                 // "lcd", "pcm", "lcf" or "diffusion"

}  // namespace lcd
