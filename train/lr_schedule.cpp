// Learning-rate schedules (see lr_schedule.h).
#include "train/lr_schedule.h"

#include <cmath>

#include "autograd/errors.h"

namespace lcd {

double learning_rate(const std::string& schedule, double lr, double min_lr, int64_t warmup, int64_t total, int64_t step) {
  if (schedule == "constant") return lr;
  if (warmup > 0 && step <= warmup) return lr * static_cast<double>(step) / static_cast<double>(warmup);
  if (schedule == "warmup") return lr;
  if (schedule == "cosine") {
    const double span = std::max<int64_t>(total - warmup, 1);
    const double p = std::min(1.0, static_cast<double>(step - warmup) / span);
    return min_lr + 0.5 * (lr - min_lr) * (1.0 + std::cos(M_PI * p));
  }
  throw ConfigError("unknown learning-rate schedule \"" + schedule + "\"");
}

}  // namespace lcd
