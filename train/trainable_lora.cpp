// TrainableLora (see trainable_lora.h).
#include "train/trainable_lora.h"

#include <cmath>
#include <cstring>
#include <map>

#include "autograd/errors.h"
#include "autograd/lora_merge.h"

namespace lcd {

TrainableLora::TrainableLora(Module& model, const LoraSettings& s, Rng& rng, const std::vector<std::string>& full_weights) {
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
  build(model, factors, full_weights);
}

TrainableLora::TrainableLora(Module& model, const LoraAdapter& adapter) {
  std::vector<std::tuple<std::string, Tensor, Tensor, double>> factors;
  for (const auto& [name, f] : adapter.modules) factors.emplace_back(name, f.down.clone(), f.up.clone(), f.alpha);
  std::vector<std::string> full;
  for (auto& [name, t] : model.named_parameters()) {
    auto it = adapter.full_weights.find(name);
    if (it == adapter.full_weights.end()) continue;
    if (t->shape() != it->second.shape())
      throw FormatError("the adapter's \"" + name + "\" " + it->second.shape().str() + " does not fit the model's " + t->shape().str());
    *t = it->second.clone();
    full.push_back(name);
  }
  if (full.size() != adapter.full_weights.size())
    throw FormatError("the adapter carries whole tensors the model has no parameter for (" + adapter.full_weights.begin()->first + ")");
  build(model, factors, full);
}

void TrainableLora::build(Module& model, const std::vector<std::tuple<std::string, Tensor, Tensor, double>>& factors,
                          const std::vector<std::string>& full_weights) {
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
    sites_.push_back({name, branches, layer->weight, down, up, Tensor(), Tensor(), alpha, lora_scale(1.0, alpha, down.size(0))});
    params.emplace_back(name + ".lora_A.weight", down);
    params.emplace_back(name + ".lora_B.weight", up);
  }
  std::map<std::string, Tensor*> model_params;
  for (auto& [name, t] : model.named_parameters()) model_params[name] = t;
  for (const std::string& name : full_weights) {
    auto it = model_params.find(name);
    if (it == model_params.end()) throw FormatError("no parameter \"" + name + "\" in the model to train");
    full_.push_back({name, it->second, *it->second, Tensor()});
    params.emplace_back(name, *it->second);
  }
  online_ = FlatParameters(params);  // re-points down/up (and the whole tensors) into the flat buffer
  ema_ = allocate_storage<float>(online_.size(), false);
  std::memcpy(ema_.get(), online_.values(), sizeof(float) * online_.size());
  const auto& entries = online_.entries();
  for (size_t i = 0; i < sites_.size(); ++i) {
    const auto& a = entries[2 * i];
    const auto& b = entries[2 * i + 1];
    sites_[i].ema_down = Tensor::from_storage(a.tensor.shape(), std::shared_ptr<float>(ema_, ema_.get() + a.offset));
    sites_[i].ema_up = Tensor::from_storage(b.tensor.shape(), std::shared_ptr<float>(ema_, ema_.get() + b.offset));
  }
  for (size_t i = 0; i < full_.size(); ++i) {
    const auto& e = entries[2 * sites_.size() + i];
    full_[i].ema = Tensor::from_storage(e.tensor.shape(), std::shared_ptr<float>(ema_, ema_.get() + e.offset));
  }
}

void TrainableLora::use(Mode mode) {
  std::vector<LoraMergeSite> merges;
  for (Site& s : sites_) {
    s.branches->clear();
    if (mode == Mode::kTeacher) continue;
    s.branches->push_back(mode == Mode::kStudent ? LoraBranch{s.down, s.up, s.scale} : LoraBranch{s.ema_down, s.ema_up, s.scale});
    merges.push_back({s.weight, s.branches->back().down, s.branches->back().up, s.scale});
  }
  for (FullSite& f : full_) *f.slot = mode == Mode::kTarget ? f.ema : f.online;
  merge_lora_ahead(merges);
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
  for (FullSite& f : full_) {
    auto it = adapter.full_weights.find(f.name);
    if (it == adapter.full_weights.end()) throw FormatError("EMA adapter lacks \"" + f.name + "\"");
    f.ema.copy_from(it->second);
  }
}

LoraAdapter TrainableLora::adapter(bool ema) const {
  LoraAdapter a;
  for (const Site& s : sites_)
    a.modules[s.name] = LoraFactors{(ema ? s.ema_down : s.down).clone(), (ema ? s.ema_up : s.up).clone(), s.alpha};
  for (const FullSite& f : full_) a.full_weights[f.name] = (ema ? f.ema : f.online).clone();
  return a;
}

}  // namespace lcd
