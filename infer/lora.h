// LoRA adapters (DESIGN.md §5): per-module factors keyed by canonical diffusers module names, attached to a
// model unmerged (training, exact per-adapter weights) or merged into its weights (inference). Several
// adapters compose additively: θ' = θ + Σ_i λ_i ΔW_i.
#pragma once
#include <map>
#include <string>
#include <vector>

#include "autograd/tensor.h"
#include "infer/nn/module.h"
#include "infer/nn/unet.h"

namespace lcd {

// The module-name suffixes LoRA targets by default (diffusers' LCM-LoRA list).
const std::vector<std::string>& default_lora_targets();

struct LoraFactors {
  Tensor down;   // A: (r, in) or (r, in, kh, kw)
  Tensor up;     // B: (out, r) or (out, r, 1, 1)
  double alpha;  // ΔW = weight · alpha / r · B A
  int64_t rank() const { return down.size(0); }
  bool is_conv() const { return down.ndim() == 4; }
};

// Whole tensors an adapter may carry beside its factors, by parameter name: the guidance embedding's
// projection of a guidance-conditioned LCM-LoRA (the base model has none, so its ΔW is the tensor itself).
const std::vector<std::string>& adapter_full_weight_names();  // {"time_embedding.cond_proj.weight"}

// Stable Diffusion adapters often carry text-encoder modules too; their canonical names keep the component
// prefix ("text_encoder.text_model.encoder.layers.0.self_attn.q_proj", "text_encoder_2. ..."). lcdkit has no text
// encoder (conditions are embeddings computed elsewhere): lora-merge combine, convert and inspect carry these
// modules through, while attach_lora and merge_lora skip them (the tools say so in one line).
bool is_text_encoder_module(const std::string& name);
// The component prefix of a canonical module name: "text_encoder_2.", "text_encoder." or "" (a UNet module).
std::string component_of(const std::string& name);
struct LoraAdapter;
// The one line a tool prints when it applies an adapter to a UNet and skips text-encoder modules ("" if none).
std::string text_encoder_note(const std::string& path, const LoraAdapter& adapter);

struct LoraAdapter {
  std::map<std::string, LoraFactors> modules;  // "down_blocks.0.resnets.0.conv1" → factors (UNet and text encoders)
  std::map<std::string, Tensor> full_weights;  // parameter name → ΔW (a name of adapter_full_weight_names)
  std::map<std::string, std::string> metadata;  // carried over from the file
  std::string source_style = "diffusers";       // key style it was read in: "diffusers", "peft", "kohya" or "hdf5"
  int64_t text_encoder_modules() const;         // how many modules are text-encoder ones
  std::string source_dtype = "F32";             // dtype of its factors in the file
};

// Checks what every adapter reader must: each module has a down factor (r, in) or (r, in, kh, kw) and an up
// factor (out, r) or (out, r, 1, 1) with r ≥ 1 and no zero dimension, a finite alpha > 0, and only finite
// values; full weights have known names, rank 2 and finite values. Throws FormatError naming `origin`, the module
// and what is wrong.
void validate_lora_adapter(const LoraAdapter& adapter, const std::string& origin);

// scale = weight · alpha / r: the one place where the LoRA scale is computed.
double lora_scale(double weight, double alpha, int64_t rank);

// W += ΔW, ΔW = scale · B A in the base weight's shape ((out, in) or (out, in, kh, kw)), computed in double
// and rounded to float once per element, a block of rows at a time (in place, no whole ΔW held).
void add_lora_delta(Tensor& w, const LoraFactors& f, double weight);

// Adds each UNet module's factors as an unmerged branch (text-encoder modules are skipped); throws FormatError naming any adapter module that matches
// no Linear/Conv2d of `model` or whose shapes do not fit it.
void attach_lora(Module& model, const LoraAdapter& adapter, double weight);
// Removes every LoRA branch under `model`.
void detach_lora(Module& model);
// W += weight · ΔW for every UNet module and full weight of the adapter (same checks as attach_lora; a full weight
// needs a parameter of its name and shape: see prepare_unet_for).
void merge_lora(Module& model, const LoraAdapter& adapter, double weight);
// The two parts of merge_lora apart, for a model whose weights are read one at a time
// (load_unet_for_inference): the LoRA-layer weights `adapter` folds into, each with its factors, checked
// against the layers' shapes (so also on a model built shape-only); and the full-weight part (checked, then added).
std::vector<std::pair<Tensor*, const LoraFactors*>> lora_layer_folds(Module& model, const LoraAdapter& adapter);
void merge_full_weights(Module& model, const LoraAdapter& adapter, double weight);

// Gives `unet` what the adapter's whole tensors need: time_embedding.cond_proj (zero, time_cond_proj_dim from
// the tensor's width) for a guidance-conditioned adapter, when the UNet has none. Call before merge_lora.
void prepare_unet_for(UNet2DConditionModel& unet, const LoraAdapter& adapter);

// The Linear/Conv2d modules of `model` whose names end in one of `targets` (a suffix matches whole
// dot-separated components), as (name, module) pairs in registration order.
std::vector<std::pair<std::string, Module*>> lora_target_modules(Module& model, const std::vector<std::string>& targets);

}  // namespace lcd
