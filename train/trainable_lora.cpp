// TrainableLora (see trainable_lora.h).
#include "train/trainable_lora.h"

#include <cmath>
#include <cstring>

#include "autograd/errors.h"

namespace lcd {

TrainableLora::TrainableLora(Module& model, const LoraSettings& s, Rng& rng) {
  if (s.rank < 1) throw ConfigError("lora.rank must be at least 1, got " + std::to_string(s.rank));
  std::vector<std::tuple<std::string, Tensor, Tensor, double>> factors;
  for (auto& [name, m] : lora_target_modules(model, s.targets)) {
    const LoraLayer* layer = m->lora_layer();
    Tensor down = Tensor::empty(layer->lora_down_shape(s.rank)), up = Tensor::zeros(layer->lora_up_shape(s.rank));
    // kaiming_uniform_(a=√5): bound = √(6 / ((1 + a²) fan_in)) = 1/√fan_in
    const double bound = 1.0 / std::sqrt(static_cast<double>(down.numel() / s.rank));
    for (int64_t i = 0; i < down.numel(); ++i) down.data()[i] = static_cast<float>((2.0 * rng.uniform() - 1.0) * bound);
    factors.emplace_back(name, down, up, s.alpha);
  }
  if (factors.empty()) {
    std::string list;
    for (const auto& t : s.targets) list += (list.empty() ? "" : ", ") + t;
    throw ConfigError("lora.targets [" + list + "] match no Linear or Conv2d module of the UNet");
  }
  build(model, factors);
}

TrainableLora::TrainableLora(Module& model, const LoraAdapter& adapter) {
  std::vector<std::tuple<std::string, Tensor, Tensor, double>> factors;
  for (const auto& [name, f] : adapter.modules) factors.emplace_back(name, f.down.clone(), f.up.clone(), f.alpha);
  build(model, factors);
}

void TrainableLora::build(Module& model, const std::vector<std::tuple<std::string, Tensor, Tensor, double>>& factors) {
  std::map<std::string, Module*> modules;
  for (auto& [name, m] : model.named_modules()) modules[name] = m;
  std::vector<std::pair<std::string, Tensor>> params;
  for (const auto& [name, down, up, alpha] : factors) {
    auto it = modules.find(name);
    LoraLayer* layer = it == modules.end() ? nullptr : it->second->lora_layer();
    std::vector<LoraBranch>* branches = layer ? &layer->lora : nullptr;
    if (!branches) throw FormatError("LoRA module \"" + name + "\" matches no Linear or Conv2d of the UNet");
    // Validate shapes through the inference path's checks.
    LoraAdapter probe;
    probe.modules[name] = LoraFactors{down, up, alpha};
    attach_lora(model, probe, 1.0);
    branches->pop_back();
    sites_.push_back({name, branches, down, up, Tensor(), Tensor(), alpha, lora_scale(1.0, alpha, down.size(0))});
    params.emplace_back(name + ".lora_A.weight", down);
    params.emplace_back(name + ".lora_B.weight", up);
  }
  online_ = FlatParameters(params);  // re-points down/up into the flat buffer
  ema_ = allocate_storage<float>(online_.size(), false);
  std::memcpy(ema_.get(), online_.values(), sizeof(float) * online_.size());
  const auto& entries = online_.entries();
  for (size_t i = 0; i < sites_.size(); ++i) {
    const auto& a = entries[2 * i];
    const auto& b = entries[2 * i + 1];
    sites_[i].ema_down = Tensor::from_storage(a.tensor.shape(), std::shared_ptr<float>(ema_, ema_.get() + a.offset));
    sites_[i].ema_up = Tensor::from_storage(b.tensor.shape(), std::shared_ptr<float>(ema_, ema_.get() + b.offset));
  }
}

void TrainableLora::use(Mode mode) {
  for (Site& s : sites_) {
    s.branches->clear();
    if (mode == Mode::kStudent) s.branches->push_back({s.down, s.up, s.scale});
    if (mode == Mode::kTarget) s.branches->push_back({s.ema_down, s.ema_up, s.scale});
  }
}

void TrainableLora::update_ema(double decay) {
  const float mu = static_cast<float>(decay), one_minus = static_cast<float>(1.0 - decay);
  const float* theta = online_.values();
  float* ema = ema_.get();
  for (int64_t i = 0; i < online_.size(); ++i) ema[i] = mu * ema[i] + one_minus * theta[i];
}

void TrainableLora::set_ema(const LoraAdapter& adapter) {
  for (Site& s : sites_) {
    auto it = adapter.modules.find(s.name);
    if (it == adapter.modules.end()) throw FormatError("EMA adapter lacks module \"" + s.name + "\"");
    s.ema_down.copy_from(it->second.down);
    s.ema_up.copy_from(it->second.up);
  }
}

LoraAdapter TrainableLora::adapter(bool ema) const {
  LoraAdapter a;
  for (const Site& s : sites_)
    a.modules[s.name] = LoraFactors{(ema ? s.ema_down : s.down).clone(), (ema ? s.ema_up : s.up).clone(), s.alpha};
  return a;
}

}  // namespace lcd
