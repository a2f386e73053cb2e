// The one thread knob (--threads): sets OpenMP's and Eigen's thread count together.
#pragma once

namespace lcd {

void set_num_threads(int threads);  // threads ≤ 0 keeps the OpenMP default
int num_threads();

}  // namespace lcd
