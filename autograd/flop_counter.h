// A process-wide count of the multiply-add FLOPs (2 per multiply-add) done by the GEMM-based ops (conv2d,
// linear and the row-GEMM layers forward and backward, matmul, bmm, attention forward and backward), for
// benchmarks that report GFLOP/s. Counting is off unless enabled.
#pragma once
#include <atomic>
#include <cstdint>

namespace lcd {

struct FlopCounter {
  static std::atomic<bool>& enabled() {
    static std::atomic<bool> on{false};
    return on;
  }
  static std::atomic<int64_t>& count() {
    static std::atomic<int64_t> n{0};
    return n;
  }
  static void add(int64_t flops) {
    if (enabled().load(std::memory_order_relaxed)) count().fetch_add(flops, std::memory_order_relaxed);
  }
};

}  // namespace lcd
