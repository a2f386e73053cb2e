// Aligned allocation of tensor buffers.
#include "autograd/storage.h"

#include <malloc.h>

#include <cstdlib>
#include <cstring>
#include <new>

namespace lcd {

namespace {
// glibc serves large blocks with fresh mmap()s and returns them on free, so every activation of a training
// step would page-fault its memory in again (measured: ~8% of a UNet step). Keep freed blocks in the heap.
const bool kHeapTuned = [] {
  mallopt(M_MMAP_THRESHOLD, 32 << 20);  // glibc's maximum; larger blocks are still mmap'ed
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
  return true;
}();
}  // namespace

template <typename T>
std::shared_ptr<T> allocate_storage(int64_t n, bool zero) {
  (void)kHeapTuned;
  size_t bytes = static_cast<size_t>(n > 0 ? n : 1) * sizeof(T);
  bytes = (bytes + kStorageAlignment - 1) / kStorageAlignment * kStorageAlignment;
  void* p = std::aligned_alloc(kStorageAlignment, bytes);
  if (!p) throw std::bad_alloc();
  if (zero) std::memset(p, 0, bytes);
  return std::shared_ptr<T>(static_cast<T*>(p), [](T* q) { std::free(q); });
}

template std::shared_ptr<float> allocate_storage<float>(int64_t, bool);
template std::shared_ptr<double> allocate_storage<double>(int64_t, bool);

}  // namespace lcd
