// Restyled Fashion-MNIST for style adapters (issue 9): deterministic, visible transformations of images in
// [-1, 1] (N, C, H, W), applied before encoding.
//   "invert":  x → −x (white background, dark garments; the 2-pixel padding turns white too)
//   "thicken": a 3×3 grey-scale dilation (max filter), which thickens every stroke by one pixel per side
#pragma once
#include <string>

#include "datasets/fashion_mnist.h"

namespace lcd {

// The names apply_style accepts ("" means none).
bool is_known_style(const std::string& style);
// Returns the restyled images; throws ValueError for an unknown style.
Tensor apply_style(const Tensor& images, const std::string& style);

}  // namespace lcd
