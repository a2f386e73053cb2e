// lcm-sample: samples a model (+ LoRA adapters) with LCM, DDIM or DPM-Solver++(2M) and writes latents and
// PNGs (DESIGN.md §7). The command is a library function so tests can call it; lcm_sample_main.cpp wraps it.
#pragma once

namespace lcd {

int lcm_sample_command(int argc, char** argv);

}  // namespace lcd
