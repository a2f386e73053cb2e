// Learning-rate schedules as a pure function of the step (1-based): constant; warmup (linear from lr/W to lr
// over W steps, then constant); cosine (the same warmup, then lr_min + ½(lr − lr_min)(1 + cos(π·p)) with p
// the fraction of the post-warmup steps done).
#pragma once
#include <cstdint>
#include <string>

namespace lcd {

double learning_rate(const std::string& schedule, double lr, double min_lr, int64_t warmup_steps, int64_t total_steps,
                     int64_t step);

}  // namespace lcd
