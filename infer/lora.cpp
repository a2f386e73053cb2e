// LoRA attach / merge (see lora.h).
#include "infer/lora.h"

#include <Eigen/Core>

#include <algorithm>
#include <cmath>

#include "autograd/errors.h"
#include "autograd/finite.h"
#include "infer/nn/layers.h"

namespace lcd {

const std::vector<std::string>& default_lora_targets() {
  static const std::vector<std::string> targets = {
      "to_q",  "to_k",  "to_v",          "to_out.0",           "proj_in",           "proj_out",      "ff.net.0.proj",
      "ff.net.2", "conv1", "conv2", "conv_shortcut", "downsamplers.0.conv", "upsamplers.0.conv", "time_emb_proj"};
  return targets;
}

const std::vector<std::string>& adapter_full_weight_names() {
  static const std::vector<std::string> names = {"time_embedding.cond_proj.weight"};
  return names;
}

std::string component_of(const std::string& name) {
  for (const char* c : {"text_encoder_2.", "text_encoder."})
    if (name.rfind(c, 0) == 0) return c;
  return "";
}

bool is_text_encoder_module(const std::string& name) { return !component_of(name).empty(); }

int64_t LoraAdapter::text_encoder_modules() const {
  int64_t n = 0;
  for (const auto& [name, f] : modules) n += is_text_encoder_module(name);
  return n;
}

std::string text_encoder_note(const std::string& path, const LoraAdapter& adapter) {
  const int64_t n = adapter.text_encoder_modules();
  if (n == 0) return "";
  return "note: " + path + ": " + std::to_string(n) + " text-encoder module(s) not applied (lcdkit has no text "
         "encoder; conditions are embeddings from the model's table or --cond, computed with the adapter's text "
         "encoder applied where it matters)";
}

void validate_lora_adapter(const LoraAdapter& adapter, const std::string& origin) {
  for (const auto& [name, t] : adapter.full_weights) {
    const auto& known = adapter_full_weight_names();
    if (std::find(known.begin(), known.end(), name) == known.end())
      throw FormatError(origin + ": whole tensor \"" + name + "\" is not one an adapter may carry");
    if (t.ndim() != 2 || t.size(0) < 1 || t.size(1) < 1)
      throw FormatError(origin + ": \"" + name + "\" has shape " + t.shape().str() + " (need (out, in))");
    if (const int64_t i = first_nonfinite(t); i >= 0)
      throw FormatError(origin + ": \"" + name + "\" has a NaN or infinite value (element " + std::to_string(i) + ")");
  }
  for (const auto& [module, f] : adapter.modules) {
    const std::string& name = module;  // (a lambda may not capture a structured binding in C++17)
    auto fail = [&](const std::string& why) { return FormatError(origin + ": module \"" + name + "\" " + why); };
    if (!f.down.defined() || !f.up.defined()) throw fail("lacks one of its two LoRA factors");
    const Shape& d = f.down.shape();
    const Shape& u = f.up.shape();
    const bool conv = d.rank() == 4;
    if ((d.rank() != 2 && !conv) || u.rank() != d.rank())
      throw fail("has factors " + d.str() + " and " + u.str() + " that do not form a LoRA (need (r, in) and (out, r), "
                 "or (r, in, kh, kw) and (out, r, 1, 1))");
    if (d[0] < 1) throw fail("has rank 0 (down " + d.str() + ")");
    for (int i = 0; i < d.rank(); ++i)
      if (d[i] < 1 || u[i] < 1) throw fail("has an empty factor (down " + d.str() + ", up " + u.str() + ")");
    if (u[1] != d[0] || (conv && (u[2] != 1 || u[3] != 1)))
      throw fail("has down " + d.str() + " of rank " + std::to_string(d[0]) + " but up " + u.str());
    if (!std::isfinite(f.alpha) || f.alpha <= 0)
      throw fail("has alpha " + std::to_string(f.alpha) + " (must be a finite number > 0)");
    for (const auto& [role, t] : {std::pair<const char*, const Tensor*>{"down", &f.down}, {"up", &f.up}})
      if (const int64_t i = first_nonfinite(*t); i >= 0)
        throw fail(std::string("has a NaN or infinite value in its ") + role + " factor (element " + std::to_string(i) + ")");
  }
}

double lora_scale(double weight, double alpha, int64_t rank) { return weight * alpha / static_cast<double>(rank); }

void add_lora_delta(Tensor& w, const LoraFactors& f, double weight) {
  const int64_t r = f.rank(), out = f.up.size(0), in_flat = f.down.numel() / r;
  if (out * in_flat != w.numel())
    throw ShapeError("LoRA delta " + std::to_string(out) + "x" + std::to_string(in_flat) + " does not fit weight " +
                     w.shape().str());
  using Mat = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  const double scale = lora_scale(weight, f.alpha, r);
  const Mat b = Eigen::Map<const Eigen::Matrix<float, -1, -1, Eigen::RowMajor>>(f.up.data(), out, r).cast<double>();
  const Mat a = Eigen::Map<const Eigen::Matrix<float, -1, -1, Eigen::RowMajor>>(f.down.data(), r, in_flat).cast<double>();
  float* wp = w.data();
  // Blocks of rows of ΔW, each computed in double, rounded once and added: no whole ΔW is ever held (59 MB
  // for an SD1.5 3×3 kernel of 1280 channels, twice that in double).
  constexpr int64_t kRows = 16;
#pragma omp parallel for schedule(dynamic, 1) if (out * in_flat > (int64_t(1) << 20))
  for (int64_t i0 = 0; i0 < out; i0 += kRows) {
    const int64_t m = std::min(kRows, out - i0);
    const Mat delta = scale * (b.middleRows(i0, m) * a);  // (m, in_flat)
    float* row = wp + i0 * in_flat;
    for (int64_t i = 0; i < m * in_flat; ++i) row[i] += static_cast<float>(delta.data()[i]);
  }
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
  if (!adapter.full_weights.empty())
    throw FormatError("an adapter with whole tensors (" + adapter.full_weights.begin()->first + ") can only be merged");
  auto modules = module_map(model);
  std::vector<std::pair<LoraLayer*, LoraBranch>> pending;  // validate everything before changing anything
  for (const auto& [name, f] : adapter.modules)
    if (!is_text_encoder_module(name))
      pending.emplace_back(find_target(modules, name, f), LoraBranch{f.down, f.up, lora_scale(weight, f.alpha, f.rank())});
  for (auto& [layer, branch] : pending) layer->lora.push_back(branch);
}

void detach_lora(Module& model) {
  for (auto& [name, mod] : model.named_modules())
    if (LoraLayer* layer = mod->lora_layer()) layer->lora.clear();
}

std::vector<std::pair<Tensor*, const LoraFactors*>> lora_layer_folds(Module& model, const LoraAdapter& adapter) {
  auto modules = module_map(model);
  std::vector<std::pair<Tensor*, const LoraFactors*>> folds;
  for (const auto& [name, f] : adapter.modules)
    if (!is_text_encoder_module(name)) folds.emplace_back(&find_target(modules, name, f)->weight, &f);
  return folds;
}

namespace {

// The full weights of `adapter` with the parameters they add into, checked.
std::vector<std::pair<Tensor*, const Tensor*>> full_weight_folds(Module& model, const LoraAdapter& adapter) {
  std::map<std::string, Tensor*> params;
  for (auto& [name, t] : model.named_parameters()) params[name] = t;
  std::vector<std::pair<Tensor*, const Tensor*>> whole;
  for (const auto& [name, t] : adapter.full_weights) {
    auto it = params.find(name);
    if (it == params.end())
      throw FormatError("the adapter's whole tensor \"" + name + "\" has no parameter of that name in the model" +
                        (name == "time_embedding.cond_proj.weight" ? " (a guidance-conditioned adapter needs a UNet with "
                                                                     "time_cond_proj_dim)" : ""));
    if (it->second->shape() != t.shape())
      throw FormatError("the adapter's \"" + name + "\" " + t.shape().str() + " does not fit the model's " +
                        it->second->shape().str());
    whole.emplace_back(it->second, &t);
  }
  return whole;
}

void add_full_weights(const std::vector<std::pair<Tensor*, const Tensor*>>& whole, double weight) {
  for (auto& [w, t] : whole) {
    float* wp = w->data();
    const float* tp = t->data();
    for (int64_t i = 0; i < w->numel(); ++i) wp[i] += static_cast<float>(weight * tp[i]);
  }
}

}  // namespace

void merge_lora(Module& model, const LoraAdapter& adapter, double weight) {
  // 1. Check everything first, so that a bad adapter fails before any weight changes.
  const auto low_rank = lora_layer_folds(model, adapter);
  const auto whole = full_weight_folds(model, adapter);
  // 2. Then fold one module at a time, in place (add_lora_delta).
  for (auto& [w, f] : low_rank) add_lora_delta(*w, *f, weight);
  add_full_weights(whole, weight);
}

void merge_full_weights(Module& model, const LoraAdapter& adapter, double weight) {
  add_full_weights(full_weight_folds(model, adapter), weight);
}

void prepare_unet_for(UNet2DConditionModel& unet, const LoraAdapter& adapter) {
  auto it = adapter.full_weights.find("time_embedding.cond_proj.weight");
  if (it != adapter.full_weights.end() && unet.config.time_cond_proj_dim == 0) unet.add_time_cond_proj(it->second.size(1));
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
