// Deterministic batching: each epoch is a seeded permutation (Fisher–Yates with lcdkit's Rng, seed + epoch),
// cut into fixed-size batches (the short tail is dropped); rank r of world w takes every w-th batch. The
// state (epoch, batch) is two integers, saved in checkpoints for exact resumes. Independent of thread count.
#pragma once
#include <cstdint>
#include <vector>

namespace lcd {

class Batcher {
 public:
  Batcher(int64_t size, int64_t batch_size, uint64_t seed, int rank = 0, int world = 1);
  std::vector<int64_t> next();  // the indices of the next batch, starting a new epoch when needed
  int64_t epoch() const { return epoch_; }
  int64_t position() const { return position_; }  // batches taken in this epoch (all ranks)
  void restore(int64_t epoch, int64_t position);
  int64_t batches_per_epoch() const { return size_ / batch_size_; }

 private:
  void shuffle();
  int64_t size_, batch_size_;
  uint64_t seed_;
  int rank_, world_;
  int64_t epoch_ = 0, position_ = 0;
  std::vector<int64_t> order_;
};

}  // namespace lcd
