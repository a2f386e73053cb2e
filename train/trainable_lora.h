// A trainable LoRA adapter on a frozen UNet (DESIGN.md §5): online factors A, B in FlatParameters (the only
// tensors with gradients and optimiser state), an EMA copy θ⁻ for the LCD target, and a switch that decides
// which network a forward pass evaluates: the teacher (base only), the student (base + online) or the target
// (base + EMA). The frozen base weights are shared by all three. Whole tensors of the model may train with the
// factors (the guidance embedding's time_embedding.cond_proj.weight): they live in the same flat buffers and are
// switched with the mode (the teacher is run without their input, so it never sees them).
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "autograd/flat_parameters.h"
#include "autograd/random.h"
#include "infer/lora.h"
#include "infer/nn/layers.h"

namespace lcd {

struct LoraSettings {
  int rank = 16;
  double alpha = 16;
  std::vector<std::string> targets = default_lora_targets();
};

class TrainableLora {
 public:
  // Creates factors for every target module of `model`: A Kaiming-uniform (a = √5, bound 1/√fan_in), B = 0.
  // `full_weights` names parameters of `model` trained as they are, from their current values.
  TrainableLora(Module& model, const LoraSettings& settings, Rng& rng, const std::vector<std::string>& full_weights = {});
  // Creates the factors (and whole tensors) from an existing adapter, e.g. to continue training.
  TrainableLora(Module& model, const LoraAdapter& adapter);

  enum class Mode { kTeacher, kStudent, kTarget };
  // Re-points every module's LoRA branch (no copies); for the student and the target, then forms the merged
  // weights of the factors' current values ahead of the pass (autograd/lora_merge.h).
  void use(Mode mode);

  FlatParameters& online() { return online_; }
  // θ⁻ ← μ θ⁻ + (1 − μ) θ over the flat buffers.
  void update_ema(double decay);
  float* ema_values() { return ema_.get(); }
  const float* ema_values() const { return ema_.get(); }
  void set_ema(const LoraAdapter& adapter);  // load θ⁻ from an adapter with the same modules

  // The online (or EMA) factors as an adapter for export, keyed by module name.
  LoraAdapter adapter(bool ema = false) const;
  int64_t parameter_count() const { return online_.size(); }

 private:
  struct Site {
    std::string name;
    std::vector<LoraBranch>* branches;  // the module's branch list
    Tensor weight;                      // the module's frozen weight
    Tensor down, up;                    // online (views into online_)
    Tensor ema_down, ema_up;            // EMA (views into ema_)
    double alpha, scale;
  };
  struct FullSite {
    std::string name;
    Tensor* slot;       // the model's parameter member
    Tensor online, ema;  // views into online_ and ema_
  };
  void build(Module& model, const std::vector<std::tuple<std::string, Tensor, Tensor, double>>& factors,
             const std::vector<std::string>& full_weights);
  std::vector<Site> sites_;
  std::vector<FullSite> full_;
  FlatParameters online_;
  std::shared_ptr<float> ema_;
};

}  // namespace lcd
