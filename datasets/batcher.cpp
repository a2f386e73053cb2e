// Batcher (see batcher.h).
#include "datasets/batcher.h"

#include <numeric>

#include "autograd/errors.h"
#include "autograd/random.h"

namespace lcd {

Batcher::Batcher(int64_t size, int64_t batch_size, uint64_t seed, int rank, int world)
    : size_(size), batch_size_(batch_size), seed_(seed), rank_(rank), world_(world) {
  if (batch_size < 1) throw ValueError("batch size must be at least 1");
  if (world < 1 || rank < 0 || rank >= world) throw ValueError("rank must be in 0..world-1");
  if (size / batch_size < world)
    throw ValueError("dataset of " + std::to_string(size) + " is too small for " + std::to_string(world) +
                     " shard(s) of batch " + std::to_string(batch_size));
  shuffle();
}

void Batcher::shuffle() {
  order_.resize(size_);
  std::iota(order_.begin(), order_.end(), 0);
  Rng rng(seed_ * 1000003ull + static_cast<uint64_t>(epoch_));
  for (int64_t i = size_ - 1; i > 0; --i) std::swap(order_[i], order_[rng.uniform_int(i + 1)]);
}

std::vector<int64_t> Batcher::next() {
  if (position_ + world_ > batches_per_epoch()) {
    ++epoch_;
    position_ = 0;
    shuffle();
  }
  const int64_t b = position_ + rank_;
  position_ += world_;
  return std::vector<int64_t>(order_.begin() + b * batch_size_, order_.begin() + (b + 1) * batch_size_);
}

void Batcher::restore(int64_t epoch, int64_t position) {
  epoch_ = epoch;
  position_ = position;
  shuffle();
}

}  // namespace lcd
