// Loading and saving modules in diffusers' directory layout (DESIGN.md §6.1): <dir>/config.json +
// <dir>/diffusion_pytorch_model.safetensors. Loading is strict: missing, unexpected and shape-mismatched keys
// are all listed by name in one error.
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "infer/io/safetensors.h"
#include "infer/nn/autoencoder.h"
#include "infer/nn/unet.h"

namespace lcd {

// Copies every parameter of `module` from `file` (any float dtype); throws FormatError listing all problems.
// Parameters of a module built shape-only get their storage as they are read; `after_each` (optional) sees
// each parameter just read.
void load_state_dict(Module& module, const SafetensorsFile& file,
                     const std::function<void(Tensor&)>& after_each = nullptr);

std::unique_ptr<UNet2DConditionModel> load_unet(const std::string& dir);
std::unique_ptr<AutoencoderKL> load_autoencoder(const std::string& dir);

// For forward-only use at the process precision (lcm-sample): built shape-only, then each parameter read, the
// adapters' LoRA-layer ΔW (each with its weight) folded into it, and every linear and convolution weight kept
// only in its kernels' forward form as soon as it is read (autograd/inference_weights.h). At most one float32
// weight is resident beside the kept forms: an SD1.5 UNet in bf16 loads within 1.7 GB instead of 3.4. The
// adapters' whole tensors (a guidance embedding, with prepare_unet_for) follow. Same checks as load_unet +
// merge_lora; an adapter's errors name its path.
struct LoraAdapter;
struct FoldedAdapter {
  const LoraAdapter* adapter;
  double weight;
  std::string path;  // for messages
};
std::unique_ptr<UNet2DConditionModel> load_unet_for_inference(const std::string& dir,
                                                              const std::vector<FoldedAdapter>& adapters);
std::unique_ptr<AutoencoderKL> load_autoencoder_for_inference(const std::string& dir);

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
