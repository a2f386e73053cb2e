// Seeded random weights for benchmarks of architectures whose trained weights lcdkit does not ship (Stable
// Diffusion configs, issue 18): values of the scale a trained network has, so that activations stay O(1) and
// no kernel meets denormals or infinities.
#pragma once
#include <cstdint>

#include "infer/nn/module.h"

namespace lcd {

// Every parameter of `module`, by its name, uniform with these standard deviations: matrices and kernels
// 1/√fan_in (fan_in = all dimensions but the first), biases 0.02, normalisation weights 1 ± 0.02. The same
// seed gives the same weights, on any thread count.
void fill_random_weights(Module& module, uint64_t seed);

}  // namespace lcd
