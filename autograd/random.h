// Rng: the seeded random source of lcdkit (mt19937_64; normals by the Box–Muller transform, so the stream
// is the same with any standard library). Its state can be saved and restored for bit-exact resumes.
#pragma once
#include <cstdint>
#include <random>
#include <string>

#include "autograd/tensor.h"

namespace lcd {

class Rng {
 public:
  explicit Rng(uint64_t seed = 0) : engine_(seed) {}
  uint64_t next_u64() { return engine_(); }
  double uniform();                      // [0, 1), 53 random bits
  int64_t uniform_int(int64_t n);        // 0..n-1
  double normal();                       // N(0, 1)
  Tensor normal_tensor(const Shape& shape);
  std::string state() const;             // serialised engine state and the cached normal
  void set_state(const std::string& s);  // throws ValueError on a malformed state

 private:
  std::mt19937_64 engine_;
  bool has_spare_ = false;
  double spare_ = 0;
};

}  // namespace lcd
