// Aligned, reference-counted float/double buffers. A tensor's data is a shared_ptr that may alias into a
// larger buffer (the flat parameter buffers of autograd/flat_parameters.h) and keeps that buffer alive.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>

namespace lcd {

constexpr size_t kStorageAlignment = 64;  // one cache line; enough for AVX-512 loads

// A new buffer of n elements, 64-byte aligned; zero-filled when `zero` is set. Blocks of 64 KB or more are
// recycled through a cache (storage.cpp).
template <typename T>
std::shared_ptr<T> allocate_storage(int64_t n, bool zero);

// Frees every cached block back to the system: for a tool that has dropped a large model and goes on to other
// work (lcm-sample frees the UNet's 3.4 GB of SD1.5 weights before decoding).
void release_cached_storage();

// The most bytes the cache holds (3 GB unless set); blocks freed beyond it go back to the system. A training
// loop reuses its blocks step after step; a tool that runs a few forwards over large images (lcm-sample at
// SD scale: 134–268 MB activations at 512²) sets a smaller limit, since blocks cached at one resolution are
// rarely asked for again and would only add to its peak memory.
void limit_cached_storage(size_t bytes);

// Also caps blocks in use and cached together: a freed block is kept only while both stay within `bytes`
// (no cap unless set). For a phase that may use the memory an earlier phase freed (lcm-sample's decode after
// the UNet) without rising above that phase's peak. Counts blocks of 64 KB or more (the cache's sizes).
void limit_storage_footprint(size_t bytes);
size_t storage_in_use_bytes();  // those blocks, in use now

}  // namespace lcd
