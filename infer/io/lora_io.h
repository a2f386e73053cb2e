// LoRA files in the key styles of the Stable Diffusion world (DESIGN.md §6.3, reference/lora-merge.md §2).
// Only this file knows them; everything else sees canonical module names (text-encoder modules keep a
// "text_encoder." / "text_encoder_2." prefix, infer/lora.h).
//   diffusers: one file, unet.<module>.lora_A.weight / lora_B.weight (and text_encoder[_2].<module>...), alpha
//     and rank in the lora_adapter_metadata entry of __metadata__ (<component>.lora_alpha, .r, .alpha_pattern)
//     or an adapter_config.json beside the file; no alpha means alpha = r.
//   PEFT: a folder with adapter_model.safetensors (base_model.model.<module>.lora_A.weight ...) and the
//     adapter_config.json PeftModel.from_pretrained reads (peft_type, r, lora_alpha, target_modules, ...).
//   kohya: lora_unet_<module with _>.lora_down.weight / .lora_up.weight / .alpha, lora_te_ (SD1.x/2.x) or
//     lora_te1_ / lora_te2_ (SDXL) for text encoders; .alpha missing or 0 means alpha = rank (kohya's
//     LoRAModule). Metadata ss_network_* and modelspec.* are written fresh for what the file holds.
// Refused by name, never read in part: LyCORIS modules (LoCon Tucker lora_mid, LoHa hada_*, LoKr lokr_*, OFT),
// DoRA (dora_scale, lora_magnitude_vector) and SGM block names (lora_unet_input_blocks_..., as kohya's SDXL
// files have; lcdkit reads diffusers module names).
#pragma once
#include <string>

#include "infer/io/safetensors.h"
#include "infer/lora.h"

namespace lcd {

enum class LoraFormat { kDiffusers, kPeft, kKohya, kHdf5 };

// The adapter file inside a folder given as an adapter (PEFT's adapter_model.safetensors, else diffusers'
// pytorch_lora_weights.safetensors), or `path` itself when it is not a folder.
std::string resolve_adapter_path(const std::string& path);

// Reads a .h5 export (/lora/<module>/{A,B}, attribute alpha), a PEFT folder, or a safetensors file in any of
// the styles (detected from the keys). Unknown keys are a FormatError naming them, unless allow_unmatched (then
// they are skipped and listed in *skipped when given); unsupported module kinds are always an error.
LoraAdapter read_lora(const std::string& path, bool allow_unmatched = false, std::vector<std::string>* skipped = nullptr);
LoraAdapter read_lora(const SafetensorsFile& file, const std::string& adapter_config_path, bool allow_unmatched,
                      std::vector<std::string>* skipped);

// Writes an adapter atomically. diffusers files carry lora_adapter_metadata per component (most common r and
// alpha, with rank_pattern/alpha_pattern for modules that differ); a PEFT export is the folder `path` (UNet
// modules only: a PeftModel wraps one model); kohya files carry an .alpha per module and fresh ss_*/modelspec.*
// metadata; HDF5 files hold /lora/<module>/A and /B with an alpha attribute on the module's group (float32).
void write_lora(const std::string& path, const LoraAdapter& adapter, LoraFormat format, DType dtype = DType::kF32);

// "down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_out_0" → "down_blocks.0.attentions.0.
// transformer_blocks.0.attn1.to_out.0", by the vocabulary of diffusers' UNet and CLIP component names. Throws
// FormatError for a name it cannot parse.
std::string kohya_to_module_name(const std::string& kohya);
std::string module_to_kohya_name(const std::string& module);

// kohya's ss_base_model_version for a UNet of this shape: "sd_v1", "sd_v2", "sdxl_base_v1-0", or "" (another
// model, such as the Fashion-MNIST teacher).
std::string kohya_base_model_version(const UNetConfig& config);

}  // namespace lcd
