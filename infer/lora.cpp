// LoRA attach / merge (see lora.h).
#include "infer/lora.h"

#include <Eigen/Core>

#include "autograd/errors.h"
#include "infer/nn/layers.h"

namespace lcd {

const std::vector<std::string>& default_lora_targets() {
  static const std::vector<std::string> targets = {
      "to_q",  "to_k",  "to_v",          "to_out.0",           "proj_in",           "proj_out",      "ff.net.0.proj",
      "ff.net.2", "conv1", "conv2", "conv_shortcut", "downsamplers.0.conv", "upsamplers.0.conv", "time_emb_proj"};
  return targets;
}

double lora_scale(double weight, double alpha, int64_t rank) { return weight * alpha / static_cast<double>(rank); }

Tensor lora_delta(const LoraFactors& f, double weight, const Shape& base_shape) {
  const int64_t r = f.rank(), out = f.up.size(0), in_flat = f.down.numel() / r;
  using Mat = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  Mat b = Eigen::Map<const Eigen::Matrix<float, -1, -1, Eigen::RowMajor>>(f.up.data(), out, r).cast<double>();
  Mat a = Eigen::Map<const Eigen::Matrix<float, -1, -1, Eigen::RowMajor>>(f.down.data(), r, in_flat).cast<double>();
  Mat delta = lora_scale(weight, f.alpha, r) * (b * a);
  Tensor d = Tensor::empty(base_shape);
  if (d.numel() != delta.size())
    throw ShapeError("LoRA delta " + std::to_string(out) + "x" + std::to_string(in_flat) + " does not fit weight " +
                     base_shape.str());
  for (int64_t i = 0; i < d.numel(); ++i) d.data()[i] = static_cast<float>(delta.data()[i]);
  return d;
}

namespace {

// The Linear or Conv2d that `name` refers to, after checking the factors fit it.
LoraLayer* find_target(const std::map<std::string, Module*>& modules, const std::string& name, const LoraFactors& f) {
  auto it = modules.find(name);
  if (it == modules.end()) throw FormatError("adapter module \"" + name + "\" matches no module of the model");
  LoraLayer* layer = it->second->lora_layer();
  if (!layer) throw FormatError("adapter module \"" + name + "\" is not a Linear or Conv2d layer");
  const int64_t r = f.down.ndim() ? f.down.size(0) : 0;
  if (r < 1) throw FormatError("adapter module \"" + name + "\" has rank 0 (down " + f.down.shape().str() + ")");
  if (f.down.shape() != layer->lora_down_shape(r) || f.up.shape() != layer->lora_up_shape(r))
    throw FormatError("adapter module \"" + name + "\": down " + f.down.shape().str() + " and up " + f.up.shape().str() +
                      " do not fit " + layer->kind() + " " + layer->weight.shape().str());
  return layer;
}

std::map<std::string, Module*> module_map(Module& model) {
  std::map<std::string, Module*> m;
  for (auto& [name, mod] : model.named_modules()) m[name] = mod;
  return m;
}

}  // namespace

void attach_lora(Module& model, const LoraAdapter& adapter, double weight) {
  auto modules = module_map(model);
  std::vector<std::pair<LoraLayer*, LoraBranch>> pending;  // validate everything before changing anything
  for (const auto& [name, f] : adapter.modules)
    pending.emplace_back(find_target(modules, name, f), LoraBranch{f.down, f.up, lora_scale(weight, f.alpha, f.rank())});
  for (auto& [layer, branch] : pending) layer->lora.push_back(branch);
}

void detach_lora(Module& model) {
  for (auto& [name, mod] : model.named_modules())
    if (LoraLayer* layer = mod->lora_layer()) layer->lora.clear();
}

void merge_lora(Module& model, const LoraAdapter& adapter, double weight) {
  auto modules = module_map(model);
  std::vector<std::pair<Tensor, Tensor>> updates;
  for (const auto& [name, f] : adapter.modules) {
    Tensor& w = find_target(modules, name, f)->weight;
    updates.emplace_back(w, lora_delta(f, weight, w.shape()));
  }
  for (auto& [w, delta] : updates)
    for (int64_t i = 0; i < w.numel(); ++i) w.data()[i] += delta.data()[i];
}

std::vector<std::pair<std::string, Module*>> lora_target_modules(Module& model, const std::vector<std::string>& targets) {
  std::vector<std::pair<std::string, Module*>> out;
  for (auto& [name, mod] : model.named_modules()) {
    if (!mod->lora_layer()) continue;
    for (const auto& suffix : targets)
      if (name == suffix || (name.size() > suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0 &&
                             name[name.size() - suffix.size() - 1] == '.')) {
        out.emplace_back(name, mod);
        break;
      }
  }
  return out;
}

}  // namespace lcd
