// The process-wide table of oneDNN plans (matmul, convolution), one per shape key, made on first use and kept
// until exit. Each thread looks a key up in its own copy of what it has seen first, and takes the shared
// table's lock only for keys new to it. Why: a training step looks plans up thousands of times from both
// threads at once (bf16 lcd-step, batch 32: ~3,900 matmul and 280 convolution lookups a step), and the locked
// ordered map cost ~1% of it (AMD EPYC Zen 5, perf: make_plan with its key compares 0.70%, the mutex 0.30%);
// make_plan is 0.43% with this table, most of it the hash nodes' cache misses.
#pragma once
#include <array>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <unordered_map>

namespace lcd::cpu {

template <size_t N>
struct PlanKeyHash {
  size_t operator()(const std::array<int64_t, N>& key) const {
    uint64_t h = 0x9e3779b97f4a7c15ull;
    for (int64_t v : key) h = (h ^ static_cast<uint64_t>(v)) * 0x100000001b3ull + (h >> 29);
    return static_cast<size_t>(h);
  }
};

// The plan for `key`: made by make() (returning std::unique_ptr<Impl>, under the table's lock) the first time
// any thread asks for it. Plans are never freed, so the pointer stays valid for the life of the process.
template <typename Impl, size_t N, typename Make>
const Impl* cached_plan(const std::array<int64_t, N>& key, Make&& make) {
  thread_local std::unordered_map<std::array<int64_t, N>, const Impl*, PlanKeyHash<N>> seen;
  if (auto it = seen.find(key); it != seen.end()) return it->second;
  static std::mutex mutex;
  static auto* plans = new std::map<std::array<int64_t, N>, std::unique_ptr<const Impl>>();  // never destroyed
  std::lock_guard<std::mutex> lock(mutex);
  auto it = plans->find(key);
  if (it == plans->end()) it = plans->emplace(key, make()).first;
  seen.emplace(key, it->second.get());
  return it->second.get();
}

}  // namespace lcd::cpu
