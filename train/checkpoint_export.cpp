// Adapters from checkpoints (see checkpoint_export.h).
#include "train/checkpoint_export.h"

#include <algorithm>
#include <nlohmann/json.hpp>

#include "autograd/errors.h"

namespace lcd {

LoraAdapter adapter_from_checkpoint(const TrainingState& t, bool ema, const std::string& origin) {
  const nlohmann::json config = nlohmann::json::parse(t.config_json);
  if (!config.value("lora", nlohmann::json::object()).value("enabled", true))
    throw FormatError(origin + ": this run trains the whole UNet, not an adapter");
  const double alpha = config["lora"].value("alpha", 16.0);
  const std::vector<float>& values = ema ? t.ema : t.params;
  LoraAdapter a;
  std::map<std::string, std::pair<Tensor, Tensor>> factors;
  size_t offset = 0;
  for (const auto& [name, shape] : t.layout) {
    Tensor x = Tensor::empty(Shape(shape));
    std::copy(values.begin() + offset, values.begin() + offset + x.numel(), x.data());
    offset += x.numel();
    auto ends = [&](const std::string& s) { return name.size() > s.size() && name.compare(name.size() - s.size(), s.size(), s) == 0; };
    const auto& whole = adapter_full_weight_names();
    if (ends(".lora_A.weight")) factors[name.substr(0, name.size() - 14)].first = x;
    else if (ends(".lora_B.weight")) factors[name.substr(0, name.size() - 14)].second = x;
    else if (std::find(whole.begin(), whole.end(), name) != whole.end()) a.full_weights[name] = x;
    else throw FormatError(origin + ": parameter \"" + name + "\" is not part of a LoRA adapter");
  }
  for (auto& [module, f] : factors) a.modules[module] = LoraFactors{f.first, f.second, alpha};
  a.metadata["lcdkit.objective"] = config.value("objective", "lcd");
  a.metadata["lcdkit.step"] = std::to_string(t.step);
  a.metadata["lcdkit.base_model"] = config.value("model", "");
  if (a.metadata["lcdkit.objective"] == "pcm") a.metadata["lcdkit.pcm_phases"] = std::to_string(config["pcm"].value("phases", 4));
  validate_lora_adapter(a, origin);
  return a;
}

}  // namespace lcd
