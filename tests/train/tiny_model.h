// A tiny random model directory (UNet, autoencoder, condition table) and a PNG image-folder dataset written by
// the tests, so trainer tests run in seconds without shared/ or the installed dataset.
#pragma once
#include <filesystem>
#include <random>
#include <string>

#include "datasets/png.h"
#include "infer/io/model_io.h"
#include "tests/tiny_unet_config.h"

namespace lcd::testing {

inline void randomize_module(Module& m, uint64_t seed, float stddev) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> n(0.0f, stddev);
  for (auto& [name, t] : m.named_parameters()) {
    const bool norm_weight = name.find("norm") != std::string::npos && name.find(".weight") != std::string::npos;
    for (int64_t i = 0; i < t->numel(); ++i) t->data()[i] = (norm_weight ? 1.0f : 0.0f) + n(rng);
  }
}

// Writes <dir>/model (unet/, vae/, cond_embeddings.safetensors) and <dir>/images/<class>/*.png (4 classes ×
// `per_class` 32×32 images); returns the model directory.
inline std::string write_tiny_model_and_images(const std::filesystem::path& dir, int per_class = 4) {
  namespace fs = std::filesystem;
  const fs::path model = dir / "model";
  nlohmann::json unet_cfg = tiny_unet_config(8);
  unet_cfg["sample_size"] = 8;
  UNet2DConditionModel unet(UNetConfig::from_json(unet_cfg, "tiny"));
  randomize_module(unet, 1, 0.1f);
  save_module(unet, unet_cfg, (model / "unet").string());
  nlohmann::json vae_cfg = {{"block_out_channels", {8, 8, 8}}, {"layers_per_block", 1}, {"norm_num_groups", 4},
                            {"latent_channels", 2},            {"in_channels", 1},      {"out_channels", 1},
                            {"sample_size", 32},               {"scaling_factor", 0.5}};
  AutoencoderKL vae(AutoencoderConfig::from_json(vae_cfg, "tiny"));
  randomize_module(vae, 2, 0.1f);
  save_module(vae, vae_cfg, (model / "vae").string());
  std::mt19937_64 rng(3);
  std::normal_distribution<float> n(0.0f, 1.0f);
  Tensor table = Tensor::empty({5, 3, 8});  // 4 classes + unconditional
  for (int64_t i = 0; i < table.numel(); ++i) table.data()[i] = n(rng);
  write_safetensors((model / "cond_embeddings.safetensors").string(), {{"cond_embeddings", table}});
  for (int c = 0; c < 4; ++c) {
    fs::create_directories(dir / "images" / std::to_string(c));
    for (int k = 0; k < per_class; ++k) {
      Image8 img{28, 28, 1, std::vector<uint8_t>(28 * 28), {}};
      for (size_t p = 0; p < img.pixels.size(); ++p) img.pixels[p] = static_cast<uint8_t>((p * (c + 1) + k * 7) % 256);
      write_png((dir / "images" / std::to_string(c) / (std::to_string(k) + ".png")).string(), img);
    }
  }
  return model.string();
}

}  // namespace lcd::testing
