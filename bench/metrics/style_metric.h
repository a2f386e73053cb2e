// How bench/quality measures samples of a restyled Fashion-MNIST (issue 9; styles from datasets/style.h).
//
// Style score (style "invert"): an image counts as styled when the mean of its background band, mapped to
// [0, 1], exceeds 0.5. The band is the outer 2 pixels of the 28×28 garment area (rows and columns 2–3 and
// 28–29 of the 32×32 image), just inside the 2-pixel padding. Why this statistic: garments rarely reach the
// band, so it reads the background, which is what inversion turns from black to white. On real data it
// separates the 10,000 plain test images from their inverted copies in all but 2 cases each (99.98%;
// quality prints that check). The padding itself is left out: the autoencoder, trained on plain images,
// decodes it dark for every latent, so it carries no style. The score of a set is the fraction counted as
// styled.
//
// Class accuracy and FID of styled samples use the plain-data classifier after undoing the style: FID against
// the styled test set in the features φ(x) = classifier(undo(x)). For "invert", undo(x) = −x with the 2-pixel
// padding set back to black: inverted real images then become exactly the plain ones, and generated ones are
// not penalised for the dark padding the autoencoder always decodes (which −x would turn white, a frame the
// classifier never saw).
#pragma once
#include <string>

#include "autograd/tensor.h"

namespace lcd {

// Throws UsageError for a style without a score (only "invert" has one).
void check_style_has_metric(const std::string& style);
// Per-image means in [0, 1] of the band of `width` pixels that starts `inset` pixels inside the image edge;
// images (N, 1, H, W) in [-1, 1].
std::vector<double> background_band_means(const Tensor& images, int inset = 2, int width = 2);
// Fraction of images whose band mean exceeds 0.5.
double style_score(const Tensor& images);
// The images with the style undone (the input itself for style ""); see above for "invert".
Tensor undo_style(const Tensor& images, const std::string& style);

}  // namespace lcd
