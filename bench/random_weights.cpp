#include "bench/random_weights.h"

#include <cmath>
#include <functional>
#include <string>

namespace lcd {

namespace {
// splitmix64: a fast, well-mixed stream per parameter (860 M values must not take a minute to draw).
inline uint64_t splitmix(uint64_t& s) {
  uint64_t z = (s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}
// Uniform on [−1, 1) from the top 24 bits.
inline float symmetric_unit(uint64_t& s) { return static_cast<float>(splitmix(s) >> 40) * (2.0f / 16777216.0f) - 1.0f; }
}  // namespace

void fill_random_weights(Module& module, uint64_t seed) {
  const auto params = module.named_parameters();
#pragma omp parallel for schedule(dynamic, 1)
  for (size_t k = 0; k < params.size(); ++k) {
    const std::string& name = params[k].first;
    Tensor& p = *params[k].second;
    uint64_t state = seed * 0x2545f4914f6cdd1dull + std::hash<std::string>{}(name);
    float* v = p.data();
    const int64_t n = p.numel();
    // A uniform on [−a, a) has standard deviation a/√3.
    if (p.ndim() >= 2) {
      const float a = static_cast<float>(std::sqrt(3.0 / static_cast<double>(n / p.size(0))));
      for (int64_t i = 0; i < n; ++i) v[i] = a * symmetric_unit(state);
    } else {
      const bool norm_weight = name.find("norm") != std::string::npos && name.size() > 7 &&
                               name.compare(name.size() - 7, 7, ".weight") == 0;
      const float a = 0.02f * std::sqrt(3.0f);
      for (int64_t i = 0; i < n; ++i) v[i] = (norm_weight ? 1.0f : 0.0f) + a * symmetric_unit(state);
    }
  }
}

LoraFactors random_lora_factors(const Shape& weight, int64_t rank, Rng& rng) {
  std::vector<int64_t> down = weight.to_vector(), up = {weight[0], rank};
  down[0] = rank;
  if (weight.rank() == 4) up = {weight[0], rank, 1, 1};
  LoraFactors f{rng.normal_tensor(Shape(down)), rng.normal_tensor(Shape(up)), double(rank)};
  for (Tensor* t : {&f.down, &f.up}) {
    float* v = t->data();
    for (int64_t i = 0; i < t->numel(); ++i) v[i] *= 0.01f;
  }
  return f;
}

}  // namespace lcd
