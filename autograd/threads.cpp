// The one thread knob: OpenMP parallel loops and Eigen's GEMM share one count.
#include "autograd/threads.h"

#include <omp.h>

#include <Eigen/Core>

namespace lcd {

void set_num_threads(int threads) {
  if (threads <= 0) return;
  omp_set_num_threads(threads);
  Eigen::setNbThreads(threads);
}

int num_threads() { return omp_get_max_threads(); }

}  // namespace lcd
