// Checks that data coming into lcdkit (weights, adapters, noise, conditions, caches) holds only finite values.
#pragma once
#include <string>

#include "autograd/tensor.h"

namespace lcd {

// The index of the first NaN or infinite element, or -1.
int64_t first_nonfinite(const Tensor& t);
// Throws ValueError "<what> holds NaN or infinite values (first: <value> at element <i> of <shape>)".
void require_finite(const Tensor& t, const std::string& what);

}  // namespace lcd
