// Loops that are split among the OpenMP threads only when they really run on more than one.
//
// Why not `#pragma omp parallel for if (...)`: a region that runs on one thread (its if clause false, or
// nested inside a batch part, batch_parallel.h) still costs libgomp a barrier wake-up, a futex system call:
// measured 1.7 µs a region at top level and 3.8 µs nested on an AMD EPYC Zen 5 VM, where a bf16 LCD step at
// batch 32 made 22,000 futex calls. These helpers run a plain loop instead, so only a region that splits
// pays for one. The work each iteration does never depends on how iterations are split, so results do not
// depend on the thread count either way.
#pragma once
#include <omp.h>

#include <cstdint>

namespace lcd {

// Whether a loop started here may split: not inside another parallel region, and more than one thread.
inline bool may_split() { return !omp_in_parallel() && omp_get_max_threads() > 1; }

enum class Schedule { kStatic, kDynamic };  // kDynamic hands iterations out one at a time (uneven work)

// body(i) for every i in [0, n), split among the threads when `worth_splitting` (the caller's size test)
// and may_split(), else in order on this thread.
template <Schedule S = Schedule::kStatic, typename Body>
void parallel_for(int64_t n, bool worth_splitting, const Body& body) {
  if (worth_splitting && n > 1 && may_split()) {
    if constexpr (S == Schedule::kStatic) {
#pragma omp parallel for schedule(static)
      for (int64_t i = 0; i < n; ++i) body(i);
    } else {
#pragma omp parallel for schedule(dynamic, 1)
      for (int64_t i = 0; i < n; ++i) body(i);
    }
  } else {
    for (int64_t i = 0; i < n; ++i) body(i);
  }
}

// As parallel_for, with a state made once on each thread that takes part (per-thread scratch buffers):
// body(state, i) with state = make_state().
template <Schedule S = Schedule::kStatic, typename Make, typename Body>
void parallel_for_with(int64_t n, bool worth_splitting, const Make& make_state, const Body& body) {
  if (worth_splitting && n > 1 && may_split()) {
#pragma omp parallel
    {
      auto state = make_state();
      if constexpr (S == Schedule::kStatic) {
#pragma omp for schedule(static)
        for (int64_t i = 0; i < n; ++i) body(state, i);
      } else {
#pragma omp for schedule(dynamic, 1)
        for (int64_t i = 0; i < n; ++i) body(state, i);
      }
    }
  } else if (n > 0) {
    auto state = make_state();
    for (int64_t i = 0; i < n; ++i) body(state, i);
  }
}

// body(begin, end) over contiguous ranges that cover [0, n): one range per thread when split, else one call
// with the whole range. For element loops that vectorise inside the range (`#pragma omp simd`).
template <typename Body>
void parallel_ranges(int64_t n, bool worth_splitting, const Body& body) {
  if (worth_splitting && n > 1 && may_split()) {
#pragma omp parallel
    {
      const int64_t t = omp_get_thread_num(), threads = omp_get_num_threads();
      const int64_t begin = n * t / threads, end = n * (t + 1) / threads;
      if (begin < end) body(begin, end);
    }
  } else if (n > 0) {
    body(int64_t(0), n);
  }
}

}  // namespace lcd
