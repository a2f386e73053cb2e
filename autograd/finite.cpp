// Finite-value checks (see finite.h).
#include "autograd/finite.h"

#include <cmath>

#include "autograd/errors.h"

namespace lcd {

int64_t first_nonfinite(const Tensor& t) {
  if (!t.defined()) return -1;
  const float* p = t.data();
  const int64_t n = t.numel();
  float sum = 0;  // NaN and ±inf survive a sum (inf − inf is NaN); scan exactly only when it says so
  for (int64_t i = 0; i < n; ++i) sum += p[i] * 0.0f;
  if (std::isfinite(sum)) return -1;
  for (int64_t i = 0; i < n; ++i)
    if (!std::isfinite(p[i])) return i;
  return -1;
}

void require_finite(const Tensor& t, const std::string& what) {
  const int64_t i = first_nonfinite(t);
  if (i < 0) return;
  throw ValueError(what + " holds NaN or infinite values (first: " + std::to_string(t.data()[i]) + " at element " +
                   std::to_string(i) + " of " + t.shape().str() + ")");
}

}  // namespace lcd
