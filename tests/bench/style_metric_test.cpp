// The style score of bench/metrics/style_metric.h: it separates plain from inverted Fashion-MNIST test images
// (the claim that justifies it: all but 2 of 10,000 each way), reads the background band and nothing else
// (not the padding), and undoing "invert" restores the images exactly.
#include <gtest/gtest.h>

#include "bench/metrics/style_metric.h"
#include "autograd/errors.h"
#include "datasets/fashion_mnist.h"
#include "datasets/style.h"

namespace lcd {
namespace {

TEST(StyleScore, SeparatesPlainAndInvertedTestImages) {
  const Tensor plain = load_fashion_mnist(LCDKIT_FASHION_MNIST_DIR, Split::kTest).images;
  const Tensor inverted = apply_style(plain, "invert");
  // Counted independently of style_score: band means above 0.5 among the plain images.
  int64_t plain_bright = 0;
  for (double m : background_band_means(plain)) plain_bright += m > 0.5;
  EXPECT_LE(plain_bright, 2);
  EXPECT_LE(style_score(plain), 2e-4);
  EXPECT_GE(style_score(inverted), 1 - 2e-4);
}

TEST(StyleScore, ReadsTheBandInsideThePaddingOnly) {
  // 12×12 images. Image 0: white band (rows/cols 2–3 and 8–9), black padding and interior → styled.
  // Image 1: white padding and interior, black band → not styled.
  Tensor img = Tensor::empty({2, 1, 12, 12});
  for (int64_t k = 0; k < 2; ++k)
    for (int64_t i = 0; i < 12; ++i)
      for (int64_t j = 0; j < 12; ++j) {
        const bool inside_padding = i >= 2 && i < 10 && j >= 2 && j < 10;
        const bool interior = i >= 4 && i < 8 && j >= 4 && j < 8;
        const bool band = inside_padding && !interior;
        img.data()[(k * 12 + i) * 12 + j] = (band == (k == 0)) ? 1.0f : -1.0f;
      }
  const std::vector<double> m = background_band_means(img);
  EXPECT_DOUBLE_EQ(m[0], 1.0);
  EXPECT_DOUBLE_EQ(m[1], 0.0);
  EXPECT_DOUBLE_EQ(style_score(img), 0.5);
  EXPECT_THROW(background_band_means(Tensor::empty({1, 1, 8, 8})), ShapeError);
}

TEST(StyleScore, UndoInvertRestoresTheImagesAndOtherStylesAreRefused) {
  const Tensor plain = load_fashion_mnist(LCDKIT_FASHION_MNIST_DIR, Split::kTest).images;
  const Tensor back = undo_style(apply_style(plain, "invert"), "invert");
  for (int64_t i = 0; i < plain.numel(); ++i) ASSERT_EQ(back.data()[i], plain.data()[i]);
  // A generated inverted image keeps the autoencoder's dark padding; undoing must not turn it white.
  Tensor dark_padding = Tensor::empty({1, 1, 32, 32});
  for (int64_t i = 0; i < 32 * 32; ++i) dark_padding.data()[i] = 0.5f;
  for (int64_t j = 0; j < 32; ++j) dark_padding.data()[j] = -1.0f;  // first row: padding, dark
  const Tensor undone = undo_style(dark_padding, "invert");
  for (int64_t j = 0; j < 32; ++j) ASSERT_EQ(undone.data()[j], -1.0f);
  EXPECT_EQ(undone.data()[5 * 32 + 5], -0.5f);
  EXPECT_THROW(check_style_has_metric("thicken"), UsageError);
  EXPECT_NO_THROW(check_style_has_metric(""));
}

}  // namespace
}  // namespace lcd
