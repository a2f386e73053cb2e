// LoRA files in the two key styles of the Stable Diffusion world (DESIGN.md §6.3,
// reference/lora-merge.md §2). Only this file knows them; everything else sees canonical module names.
//   PEFT/diffusers: unet.<module>.lora_A.weight / lora_B.weight; alpha and rank from the
//     lora_adapter_metadata entry of __metadata__ (unet.lora_alpha, unet.r, unet.alpha_pattern) or an
//     adapter_config.json beside the file; no alpha means alpha = r.
//   kohya: lora_unet_<module with _>.lora_down.weight / .lora_up.weight / .alpha (F16, BF16, F32 or I64;
//     missing or 0 means alpha = rank, as kohya's LoRAModule).
#pragma once
#include <string>

#include "infer/io/safetensors.h"
#include "infer/lora.h"

namespace lcd {

enum class LoraFormat { kPeft, kKohya, kHdf5 };

// Reads a .h5 export (/lora/<module>/{A,B}, attribute alpha) or either safetensors style (detected from the keys). Unknown keys are a FormatError naming them, unless
// allow_unmatched (then they are skipped and listed in *skipped when given).
LoraAdapter read_lora(const std::string& path, bool allow_unmatched = false, std::vector<std::string>* skipped = nullptr);
LoraAdapter read_lora(const SafetensorsFile& file, const std::string& adapter_config_path, bool allow_unmatched,
                      std::vector<std::string>* skipped);

// Writes an adapter atomically. PEFT files carry lora_adapter_metadata (most common r and alpha, with
// rank_pattern/alpha_pattern for modules that differ); kohya files carry an .alpha per module; HDF5 files hold
// /lora/<module>/A and /B with an alpha attribute on the module's group (dtype is float32 there).
void write_lora(const std::string& path, const LoraAdapter& adapter, LoraFormat format, DType dtype = DType::kF32);

// "down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_out_0" → "down_blocks.0.attentions.0.
// transformer_blocks.0.attn1.to_out.0", by the vocabulary of diffusers' UNet component names. Throws
// FormatError for a name it cannot parse.
std::string kohya_to_module_name(const std::string& kohya);
std::string module_to_kohya_name(const std::string& module);

}  // namespace lcd
