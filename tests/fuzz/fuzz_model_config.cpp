// Fuzz target: the diffusers config readers (UNet, autoencoder, scheduler) on JSON text; a UNet or autoencoder
// config that is accepted and small is also built, so the builder's own arithmetic is exercised.
#include <nlohmann/json.hpp>

#include "autograd/errors.h"
#include "infer/nn/autoencoder.h"
#include "infer/nn/unet.h"
#include "infer/schedule.h"

namespace {
bool small(const std::vector<int64_t>& channels, int64_t other) {
  for (int64_t c : channels)
    if (c > 64) return false;
  return other <= 64;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const nlohmann::json j = nlohmann::json::parse(data, data + size, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return 0;  // read_json_file refuses these before any reader sees them
  try {
    const lcd::UNetConfig c = lcd::UNetConfig::from_json(j, "fuzz/unet/config.json");
    if (small(c.block_out_channels, std::max(c.cross_attention_dim, std::max(c.in_channels, c.out_channels))) &&
        c.layers_per_block <= 2)
      lcd::UNet2DConditionModel model(c);
  } catch (const lcd::Error&) {
  }
  try {
    const lcd::AutoencoderConfig c = lcd::AutoencoderConfig::from_json(j, "fuzz/vae/config.json");
    if (small(c.block_out_channels, std::max(c.latent_channels, std::max(c.in_channels, c.out_channels))) &&
        c.layers_per_block <= 2)
      lcd::AutoencoderKL model(c);
  } catch (const lcd::Error&) {
  }
  try {
    (void)lcd::NoiseSchedule::from_config(j, "fuzz/scheduler_config.json");
  } catch (const lcd::Error&) {
  }
  return 0;
}
