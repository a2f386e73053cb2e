// Loading and saving modules in diffusers' directory layout (DESIGN.md §6.1): <dir>/config.json +
// <dir>/diffusion_pytorch_model.safetensors. Loading is strict: missing, unexpected and shape-mismatched keys
// are all listed by name in one error.
#pragma once
#include <memory>
#include <string>

#include "infer/io/safetensors.h"
#include "infer/nn/autoencoder.h"
#include "infer/nn/unet.h"

namespace lcd {

// Copies every parameter of `module` from `file` (any float dtype); throws FormatError listing all problems.
void load_state_dict(Module& module, const SafetensorsFile& file);

std::unique_ptr<UNet2DConditionModel> load_unet(const std::string& dir);
std::unique_ptr<AutoencoderKL> load_autoencoder(const std::string& dir);

// Writes config.json and the weights (F32 unless dtype says otherwise), each atomically.
void save_module(const Module& module, const nlohmann::json& config, const std::string& dir, DType dtype = DType::kF32);

// A content hash of a module's parameters (names, shapes and float32 bytes; FNV-1a 64, hex), e.g. to tie a
// latent cache to the autoencoder that made it.
std::string weights_hash(const Module& module);

// The condition table of an lcdkit model directory: tensor cond_embeddings (classes+1, L, D), last row unconditional.
// With condition_dim > 0 (the UNet's cross_attention_dim), a table of another width is a FormatError.
Tensor load_cond_embeddings(const std::string& model_dir, int64_t condition_dim = 0);

// The class names of a model's condition table, from labels.json beside it (a JSON list of `classes` strings,
// row k's name at k); empty when the model has no labels.json. A list of another length is a FormatError.
std::vector<std::string> load_class_names(const std::string& model_dir, int64_t classes);

}  // namespace lcd
