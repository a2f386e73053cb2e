// The style score of bench/metrics/style_metric.h: it separates plain from inverted Fashion-MNIST test images
// perfectly (the claim that justifies it), reads the frame and nothing else, and undoing "invert" restores
// the images exactly.
#include <gtest/gtest.h>

#include "bench/metrics/style_metric.h"
#include "autograd/errors.h"
#include "datasets/fashion_mnist.h"
#include "datasets/style.h"

namespace lcd {
namespace {

TEST(StyleScore, SeparatesPlainAndInvertedTestImagesPerfectly) {
  const Tensor plain = load_fashion_mnist(LCDKIT_FASHION_MNIST_DIR, Split::kTest).images;
  const Tensor inverted = apply_style(plain, "invert");
  EXPECT_EQ(style_score(plain), 0.0);
  EXPECT_EQ(style_score(inverted), 1.0);
  // Not a near miss: every plain frame is black and every inverted one white.
  for (double m : border_frame_means(plain)) ASSERT_LT(m, 0.01);
  for (double m : border_frame_means(inverted)) ASSERT_GT(m, 0.99);
}

TEST(StyleScore, ReadsOnlyTheTwoPixelFrame) {
  // Two 8×8 images: the first white inside and black on the frame, the second the opposite.
  Tensor img = Tensor::empty({2, 1, 8, 8});
  for (int64_t k = 0; k < 2; ++k)
    for (int64_t i = 0; i < 8; ++i)
      for (int64_t j = 0; j < 8; ++j) {
        const bool frame = i < 2 || i >= 6 || j < 2 || j >= 6;
        img.data()[(k * 8 + i) * 8 + j] = (frame == (k == 1)) ? 1.0f : -1.0f;
      }
  const std::vector<double> m = border_frame_means(img);
  EXPECT_DOUBLE_EQ(m[0], 0.0);
  EXPECT_DOUBLE_EQ(m[1], 1.0);
  EXPECT_DOUBLE_EQ(style_score(img), 0.5);
}

TEST(StyleScore, UndoInvertRestoresTheImagesAndOtherStylesAreRefused) {
  const Tensor plain = load_fashion_mnist(LCDKIT_FASHION_MNIST_DIR, Split::kTest).images;
  const Tensor back = undo_style(apply_style(plain, "invert"), "invert");
  for (int64_t i = 0; i < plain.numel(); ++i) ASSERT_EQ(back.data()[i], plain.data()[i]);
  EXPECT_THROW(check_style_has_metric("thicken"), UsageError);
  EXPECT_NO_THROW(check_style_has_metric(""));
}

}  // namespace
}  // namespace lcd
