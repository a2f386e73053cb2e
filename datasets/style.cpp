// Restyling (see style.h).
#include "datasets/style.h"

#include <algorithm>

#include "autograd/errors.h"

namespace lcd {

bool is_known_style(const std::string& style) { return style.empty() || style == "invert" || style == "thicken"; }

Tensor apply_style(const Tensor& images, const std::string& style) {
  if (!is_known_style(style)) throw ValueError("unknown style \"" + style + "\" (invert or thicken)");
  if (style.empty()) return images;
  Tensor out = Tensor::empty(images.shape());
  const int64_t planes = images.size(0) * images.size(1), h = images.size(2), w = images.size(3);
  const float* src = images.data();
  float* dst = out.data();
  for (int64_t p = 0; p < planes; ++p)
    for (int64_t i = 0; i < h; ++i)
      for (int64_t j = 0; j < w; ++j) {
        const int64_t at = (p * h + i) * w + j;
        if (style == "invert") {
          dst[at] = -src[at];
        } else {
          float m = src[at];
          for (int64_t di = -1; di <= 1; ++di)
            for (int64_t dj = -1; dj <= 1; ++dj) {
              const int64_t y = i + di, x = j + dj;
              if (y >= 0 && y < h && x >= 0 && x < w) m = std::max(m, src[(p * h + y) * w + x]);
            }
          dst[at] = m;
        }
      }
  return out;
}

}  // namespace lcd
