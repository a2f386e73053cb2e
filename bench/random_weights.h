// Seeded random weights for benchmarks of architectures whose trained weights lcdkit does not ship (Stable
// Diffusion configs, issue 18): values of the scale a trained network has, so that activations stay O(1) and
// no kernel meets denormals or infinities.
#pragma once
#include <cstdint>

#include "autograd/random.h"
#include "infer/lora.h"
#include "infer/nn/module.h"

namespace lcd {

// Every parameter of `module`, by its name, uniform with these standard deviations: matrices and kernels
// 1/√fan_in (fan_in = all dimensions but the first), biases 0.02, normalisation weights 1 ± 0.02. The same
// seed gives the same weights, on any thread count.
void fill_random_weights(Module& module, uint64_t seed);

// Random LoRA factors of rank `rank` for a layer whose weight has shape `weight` ((out, in) or
// (out, in, kh, kw)): N(0, 0.01²) entries, alpha = rank, small enough that a folded model stays well-behaved.
LoraFactors random_lora_factors(const Shape& weight, int64_t rank, Rng& rng);

}  // namespace lcd
