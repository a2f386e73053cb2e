// Style score and style undoing for bench/quality (see style_metric.h).
#include "bench/metrics/style_metric.h"

#include "autograd/errors.h"
#include "datasets/style.h"

namespace lcd {

namespace {
constexpr int64_t kPadding = 2;  // Fashion-MNIST's 28×28 images padded to 32×32 (datasets/fashion_mnist.h)
}  // namespace

void check_style_has_metric(const std::string& style) {
  if (!style.empty() && style != "invert")
    throw UsageError("--style " + style + ": only \"invert\" has a style score and an inverse");
}

std::vector<double> background_band_means(const Tensor& images, int inset, int width) {
  const int64_t n = images.size(0), h = images.size(2), w = images.size(3);
  const int64_t outer = inset + width;
  if (images.ndim() != 4 || images.size(1) != 1 || h <= 2 * outer || w <= 2 * outer)
    throw ShapeError("background_band_means: expected (N, 1, H, W) images larger than the band, got " +
                     images.shape().str());
  // Pixel (i, j) is in the band when it lies in [inset, H − inset) × [inset, W − inset) but not in the interior
  // [outer, H − outer) × [outer, W − outer).
  auto in_band = [&](int64_t i, int64_t j) {
    const bool inside_inset = i >= inset && i < h - inset && j >= inset && j < w - inset;
    const bool interior = i >= outer && i < h - outer && j >= outer && j < w - outer;
    return inside_inset && !interior;
  };
  std::vector<double> means;
  for (int64_t k = 0; k < n; ++k) {
    const float* img = images.data() + k * h * w;
    double sum = 0;
    int64_t count = 0;
    for (int64_t i = 0; i < h; ++i)
      for (int64_t j = 0; j < w; ++j)
        if (in_band(i, j)) {
          sum += (img[i * w + j] + 1.0) / 2.0;  // [-1, 1] → [0, 1]
          ++count;
        }
    means.push_back(sum / count);
  }
  return means;
}

double style_score(const Tensor& images) {
  const std::vector<double> m = background_band_means(images, kPadding, 2);
  int64_t styled = 0;
  for (double v : m) styled += v > 0.5;
  return m.empty() ? 0.0 : static_cast<double>(styled) / m.size();
}

Tensor undo_style(const Tensor& images, const std::string& style) {
  check_style_has_metric(style);
  if (style.empty()) return images;
  Tensor out = apply_style(images, "invert");  // inversion is its own inverse
  const int64_t planes = out.size(0) * out.size(1), h = out.size(2), w = out.size(3), pad = kPadding;
  for (int64_t p = 0; p < planes; ++p)
    for (int64_t i = 0; i < h; ++i)
      for (int64_t j = 0; j < w; ++j)
        if (i < pad || i >= h - pad || j < pad || j >= w - pad) out.data()[(p * h + i) * w + j] = -1.0f;
  return out;
}

}  // namespace lcd
