// An adapter from a training checkpoint (lcd-train --export-checkpoint): the online (or EMA) factors and whole
// tensors at that step, with the run's alpha and metadata, e.g. to measure a run's quality along its steps.
#pragma once
#include "infer/lora.h"
#include "train/checkpoint.h"

namespace lcd {

// Throws FormatError when the checkpoint trains the whole UNet (no adapter) or its layout is not a LoRA's.
LoraAdapter adapter_from_checkpoint(const TrainingState& state, bool ema, const std::string& origin);

}  // namespace lcd
