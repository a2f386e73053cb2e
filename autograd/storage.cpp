// Aligned allocation of tensor buffers, with a cache of large blocks.
//
// glibc serves large blocks with fresh mmap()s and unmaps them on free, so every activation of every step
// would page-fault its memory in again (measured: ~30% of an LCD step at batch 128). Freed blocks of 64 KB or
// more are therefore kept, bucketed by size class, and reused; at most 3 GB are held unless limit_cached_storage says otherwise.
#include "autograd/storage.h"

#include <sys/mman.h>

#include <cstdlib>
#include <cstring>
#include <limits>
#include <map>
#include <mutex>
#include <new>
#include <vector>

namespace lcd {

namespace {

constexpr size_t kCacheMinBytes = 64 << 10;
constexpr size_t kDefaultCachedBytes = size_t(3) << 30;

// Size classes: 8 steps per power of two, so a block is at most 12.5% larger than asked for.
size_t size_class(size_t bytes) {
  size_t p = 1;
  while (p * 2 <= bytes) p *= 2;
  const size_t step = std::max<size_t>(p / 8, kStorageAlignment);
  return (bytes + step - 1) / step * step;
}

class BlockCache {
 public:
  void* take(size_t bytes) {
    std::lock_guard<std::mutex> lock(mutex_);
    in_use_ += bytes;  // the caller makes a fresh block when none is cached
    auto it = free_.find(bytes);
    if (it == free_.end() || it->second.empty()) return nullptr;
    void* p = it->second.back();
    it->second.pop_back();
    cached_ -= bytes;
    return p;
  }
  void set_footprint_limit(size_t bytes) {
    std::lock_guard<std::mutex> lock(mutex_);
    footprint_limit_ = bytes;
  }
  size_t in_use() {
    std::lock_guard<std::mutex> lock(mutex_);
    return in_use_;
  }
  void set_limit(size_t bytes) {
    std::lock_guard<std::mutex> lock(mutex_);
    limit_ = bytes;
  }
  void clear() {
    std::lock_guard<std::mutex> lock(mutex_);
    for (auto& [bytes, blocks] : free_)
      for (void* p : blocks) std::free(p);
    free_.clear();
    cached_ = 0;
  }
  void give(void* p, size_t bytes) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      in_use_ -= bytes;
      if (cached_ + bytes <= limit_ && in_use_ + cached_ + bytes <= footprint_limit_) {
        free_[bytes].push_back(p);
        cached_ += bytes;
        return;
      }
    }
    std::free(p);
  }

 private:
  std::mutex mutex_;
  std::map<size_t, std::vector<void*>> free_;
  size_t cached_ = 0;
  size_t in_use_ = 0;  // blocks of cached sizes handed out and not yet given back
  size_t limit_ = kDefaultCachedBytes;
  size_t footprint_limit_ = std::numeric_limits<size_t>::max();
};

BlockCache& cache() {
  static BlockCache* c = new BlockCache();  // never destroyed: buffers may be freed during static destruction
  return *c;
}

// Blocks of 4 MB or more are placed on 2 MB boundaries and marked for transparent huge pages: a
// Stable Diffusion UNet's 3.4 GB of weights is 840,000 page faults in 4 KB pages (measured on a VM: more
// than half the time of building the model), 1,700 in huge pages. Where THP is off, madvise does nothing.
constexpr size_t kHugePage = size_t(2) << 20;
constexpr size_t kHugeMinBytes = size_t(4) << 20;

void* fresh_block(size_t bytes) {
  if (bytes < kHugeMinBytes) return std::aligned_alloc(kStorageAlignment, bytes);
  void* p = std::aligned_alloc(kHugePage, (bytes + kHugePage - 1) / kHugePage * kHugePage);
  if (p) ::madvise(p, bytes, MADV_HUGEPAGE);
  return p;
}

const bool kPoisonUninitialised = std::getenv("LCDKIT_POISON") != nullptr;
const bool kCacheDisabled = std::getenv("LCDKIT_NO_BLOCK_CACHE") != nullptr;  // for debugging memory issues

}  // namespace

template <typename T>
std::shared_ptr<T> allocate_storage(int64_t n, bool zero) {
  size_t bytes = static_cast<size_t>(n > 0 ? n : 1) * sizeof(T);
  bytes = (bytes + kStorageAlignment - 1) / kStorageAlignment * kStorageAlignment;
  const bool cached = bytes >= kCacheMinBytes && !kCacheDisabled;
  if (cached) bytes = size_class(bytes);
  void* p = cached ? cache().take(bytes) : nullptr;
  if (!p) p = fresh_block(bytes);
  if (!p) throw std::bad_alloc();
  if (zero) {
    std::memset(p, 0, bytes);
  } else if (kPoisonUninitialised) {  // LCDKIT_POISON=1: uninitialised buffers hold NaN, so reading one shows
    float* f = static_cast<float*>(p);
    for (size_t i = 0; i < bytes / sizeof(float); ++i) f[i] = std::numeric_limits<float>::quiet_NaN();
  }
  if (!cached) return std::shared_ptr<T>(static_cast<T*>(p), [](T* q) { std::free(q); });
  return std::shared_ptr<T>(static_cast<T*>(p), [bytes](T* q) { cache().give(q, bytes); });
}

void release_cached_storage() { cache().clear(); }

void limit_cached_storage(size_t bytes) {
  cache().set_limit(bytes);
  cache().clear();  // what was cached over the new limit goes now (simplest: all of it)
}

void limit_storage_footprint(size_t bytes) {
  cache().set_footprint_limit(bytes);
  cache().clear();
}

size_t storage_in_use_bytes() { return cache().in_use(); }

template std::shared_ptr<float> allocate_storage<float>(int64_t, bool);
template std::shared_ptr<double> allocate_storage<double>(int64_t, bool);

}  // namespace lcd
