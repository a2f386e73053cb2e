// How bench/quality measures samples of a restyled Fashion-MNIST (issue 9; styles from datasets/style.h).
//
// Style score (style "invert"): an image counts as styled when the mean of its 2-pixel border frame, mapped
// to [0, 1], exceeds 0.5. Why this statistic: Fashion-MNIST's 28×28 images are padded to 32×32 with black, so
// on real data the frame is exactly 0 for every plain image and exactly 1 for every inverted one; it
// separates the two test sets perfectly (quality prints that check), and a generated image that keeps a dark
// background is unambiguously unstyled. The score of a set is the fraction counted as styled.
//
// Class accuracy and FID of styled samples use the plain-data classifier after undoing the style (x → −x for
// "invert"): FID against the styled test set in the features φ(x) = classifier(undo(x)).
#pragma once
#include <string>

#include "autograd/tensor.h"

namespace lcd {

// Throws UsageError for a style without a score (only "invert" has one).
void check_style_has_metric(const std::string& style);
// Per-image frame means in [0, 1]; images (N, 1, H, W) in [-1, 1].
std::vector<double> border_frame_means(const Tensor& images, int frame = 2);
// Fraction of images whose frame mean exceeds 0.5.
double style_score(const Tensor& images);
// The images with the style undone (the input itself for style "").
Tensor undo_style(const Tensor& images, const std::string& style);

}  // namespace lcd
