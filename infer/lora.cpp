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
struct Target {
  Linear* linear = nullptr;
  Conv2d* conv = nullptr;
};

Target find_target(const std::map<std::string, Module*>& modules, const std::string& name, const LoraFactors& f) {
  auto it = modules.find(name);
  if (it == modules.end()) throw FormatError("adapter module \"" + name + "\" matches no module of the model");
  Target t{dynamic_cast<Linear*>(it->second), dynamic_cast<Conv2d*>(it->second)};
  const int64_t r = f.down.size(0);
  auto mismatch = [&](const std::string& expected) {
    return FormatError("adapter module \"" + name + "\": down " + f.down.shape().str() + " and up " +
                       f.up.shape().str() + " do not fit " + expected);
  };
  if (t.linear) {
    if (f.down.ndim() != 2 || f.up.ndim() != 2 || f.down.size(1) != t.linear->in_features ||
        f.up.size(0) != t.linear->out_features || f.up.size(1) != r)
      throw mismatch("Linear " + t.linear->weight.shape().str());
  } else if (t.conv) {
    const Shape& w = t.conv->weight.shape();
    if (f.down.ndim() != 4 || f.up.ndim() != 4 || f.down.size(1) != w[1] || f.down.size(2) != w[2] ||
        f.down.size(3) != w[3] || f.up.size(0) != w[0] || f.up.size(1) != r || f.up.size(2) != 1 || f.up.size(3) != 1)
      throw mismatch("Conv2d " + w.str());
  } else {
    throw FormatError("adapter module \"" + name + "\" is not a Linear or Conv2d layer");
  }
  return t;
}

std::map<std::string, Module*> module_map(Module& model) {
  std::map<std::string, Module*> m;
  for (auto& [name, mod] : model.named_modules()) m[name] = mod;
  return m;
}

}  // namespace

void attach_lora(Module& model, const LoraAdapter& adapter, double weight) {
  auto modules = module_map(model);
  std::vector<std::pair<Target, LoraBranch>> pending;  // validate everything before changing anything
  for (const auto& [name, f] : adapter.modules)
    pending.emplace_back(find_target(modules, name, f), LoraBranch{f.down, f.up, lora_scale(weight, f.alpha, f.rank())});
  for (auto& [t, branch] : pending) (t.linear ? t.linear->lora : t.conv->lora).push_back(branch);
}

void detach_lora(Module& model) {
  for (auto& [name, mod] : model.named_modules()) {
    if (auto* l = dynamic_cast<Linear*>(mod)) l->lora.clear();
    if (auto* c = dynamic_cast<Conv2d*>(mod)) c->lora.clear();
  }
}

void merge_lora(Module& model, const LoraAdapter& adapter, double weight) {
  auto modules = module_map(model);
  std::vector<std::pair<Tensor, Tensor>> updates;
  for (const auto& [name, f] : adapter.modules) {
    Target t = find_target(modules, name, f);
    Tensor& w = t.linear ? t.linear->weight : t.conv->weight;
    updates.emplace_back(w, lora_delta(f, weight, w.shape()));
  }
  for (auto& [w, delta] : updates)
    for (int64_t i = 0; i < w.numel(); ++i) w.data()[i] += delta.data()[i];
}

std::vector<std::pair<std::string, Module*>> lora_target_modules(Module& model, const std::vector<std::string>& targets) {
  std::vector<std::pair<std::string, Module*>> out;
  for (auto& [name, mod] : model.named_modules()) {
    if (!dynamic_cast<Linear*>(mod) && !dynamic_cast<Conv2d*>(mod)) continue;
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
