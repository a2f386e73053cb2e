// Style score and style undoing for bench/quality (see style_metric.h).
#include "bench/metrics/style_metric.h"

#include "autograd/errors.h"
#include "datasets/style.h"

namespace lcd {

void check_style_has_metric(const std::string& style) {
  if (!style.empty() && style != "invert")
    throw UsageError("--style " + style + ": only \"invert\" has a style score and an inverse");
}

std::vector<double> border_frame_means(const Tensor& images, int frame) {
  const int64_t n = images.size(0), h = images.size(2), w = images.size(3);
  if (images.size(1) != 1 || h <= 2 * frame || w <= 2 * frame)
    throw ShapeError("border_frame_means: expected (N, 1, H, W) images larger than the frame, got " + images.shape().str());
  std::vector<double> means;
  for (int64_t k = 0; k < n; ++k) {
    const float* img = images.data() + k * h * w;
    double sum = 0;
    int64_t count = 0;
    for (int64_t i = 0; i < h; ++i)
      for (int64_t j = 0; j < w; ++j)
        if (i < frame || i >= h - frame || j < frame || j >= w - frame) {
          sum += (img[i * w + j] + 1.0) / 2.0;  // [-1, 1] → [0, 1]
          ++count;
        }
    means.push_back(sum / count);
  }
  return means;
}

double style_score(const Tensor& images) {
  const std::vector<double> m = border_frame_means(images);
  int64_t styled = 0;
  for (double v : m) styled += v > 0.5;
  return m.empty() ? 0.0 : static_cast<double>(styled) / m.size();
}

Tensor undo_style(const Tensor& images, const std::string& style) {
  check_style_has_metric(style);
  return style == "invert" ? apply_style(images, "invert") : images;  // inversion is its own inverse
}

}  // namespace lcd
