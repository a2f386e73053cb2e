// The loop helpers of autograd/parallel.h: every index exactly once, split or not, and no OpenMP region
// opened where the loop runs on one thread (the point of the helpers: such a region costs a futex call).
#include <gtest/gtest.h>
#include <omp.h>

#include <atomic>
#include <mutex>
#include <set>
#include <utility>
#include <vector>

#include "autograd/parallel.h"

namespace lcd {
namespace {

class ParallelLoops : public ::testing::Test {
 protected:
  void SetUp() override {
    saved_ = omp_get_max_threads();
    omp_set_num_threads(2);
  }
  void TearDown() override { omp_set_num_threads(saved_); }

 private:
  int saved_ = 1;
};

// Runs each helper over [0, n) and checks that every index was visited exactly once.
void expect_each_index_once(int64_t n, bool worth_splitting) {
  SCOPED_TRACE("n " + std::to_string(n) + (worth_splitting ? ", worth splitting" : ", not worth splitting"));
  std::vector<std::atomic<int>> seen(static_cast<size_t>(n));
  auto check_and_clear = [&](const char* what) {
    for (int64_t i = 0; i < n; ++i) EXPECT_EQ(seen[i].exchange(0), 1) << what << ", index " << i;
  };
  parallel_for(n, worth_splitting, [&](int64_t i) { ++seen[i]; });
  check_and_clear("parallel_for static");
  parallel_for<Schedule::kDynamic>(n, worth_splitting, [&](int64_t i) { ++seen[i]; });
  check_and_clear("parallel_for dynamic");
  std::atomic<int> states{0};
  parallel_for_with<Schedule::kDynamic>(
      n, worth_splitting, [&] { return ++states; }, [&](int state, int64_t i) {
        EXPECT_GE(state, 1);
        ++seen[i];
      });
  check_and_clear("parallel_for_with");
  EXPECT_LE(states.load(), n == 0 ? 0 : 2) << "one state per thread that takes part";
  std::mutex mutex;
  std::vector<std::pair<int64_t, int64_t>> ranges;
  parallel_ranges(n, worth_splitting, [&](int64_t begin, int64_t end) {
    EXPECT_LT(begin, end);
    {
      std::lock_guard<std::mutex> lock(mutex);
      ranges.emplace_back(begin, end);
    }
    for (int64_t i = begin; i < end; ++i) ++seen[i];
  });
  check_and_clear("parallel_ranges");
}

TEST_F(ParallelLoops, EveryIndexExactlyOnceWhetherSplitOrNot) {
  for (int64_t n : {0, 1, 2, 7, 1000})
    for (bool worth : {false, true}) expect_each_index_once(n, worth);
}

TEST_F(ParallelLoops, InsideARegionEveryIndexExactlyOnceOnTheCallingThread) {
  std::vector<std::atomic<int>> seen(200);
#pragma omp parallel num_threads(2)
  {
    const int caller = omp_get_thread_num(), level = omp_get_level();
    const int64_t offset = 100 * caller;
    parallel_for(100, true, [&](int64_t i) {
      // No nested region: the body runs on the caller's thread at the caller's nesting level.
      EXPECT_EQ(omp_get_level(), level);
      EXPECT_EQ(omp_get_thread_num(), caller);
      ++seen[offset + i];
    });
    parallel_ranges(100, true, [&](int64_t begin, int64_t end) {
      EXPECT_EQ(omp_get_level(), level);
      EXPECT_EQ(begin, 0);
      EXPECT_EQ(end, 100);
    });
  }
  for (size_t i = 0; i < seen.size(); ++i) EXPECT_EQ(seen[i].load(), 1) << i;
}

TEST_F(ParallelLoops, ARegionOpensOnlyWhenTheLoopIsWorthSplitting) {
  std::set<int> levels;
  std::mutex mutex;
  auto record = [&](int64_t) {
    std::lock_guard<std::mutex> lock(mutex);
    levels.insert(omp_get_level());
  };
  parallel_for(64, false, record);
  EXPECT_EQ(levels, std::set<int>{0}) << "not worth splitting: a plain loop, no region";
  levels.clear();
  parallel_for(64, true, record);
  EXPECT_EQ(levels, std::set<int>{1}) << "worth splitting on two threads: one region";
  levels.clear();
  omp_set_num_threads(1);
  parallel_for(64, true, record);
  EXPECT_EQ(levels, std::set<int>{0}) << "one thread: a plain loop, no region";
}

}  // namespace
}  // namespace lcd
