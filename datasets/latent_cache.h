// HDF5 latent caches (DESIGN.md §6.4): /latents (N,C,h,w) float32 = posterior mean × scaling_factor,
// optional /logvar (N,C,h,w) (unscaled, so training can sample z = (mean + e^{logvar/2} ε)·scaling_factor),
// /labels (N) int64, and attributes scaling_factor, source, source_size, autoencoder_hash. A cache whose
// attributes differ from what is expected is stale and rebuilt, never silently reused.
#pragma once
#include <functional>
#include <string>
#include <vector>

#include "autograd/tensor.h"
#include "datasets/fashion_mnist.h"

namespace lcd {

struct LatentCacheInfo {
  double scaling_factor = 1.0;
  std::string source;            // e.g. "fashion-mnist:train"
  int64_t source_size = 0;       // images encoded
  std::string autoencoder_hash;  // of the autoencoder's weights (infer/io/model_io.h weights_hash)
  bool operator==(const LatentCacheInfo& o) const {
    return scaling_factor == o.scaling_factor && source == o.source && source_size == o.source_size &&
           autoencoder_hash == o.autoencoder_hash;
  }
  std::string describe() const;
};

struct LatentCache {
  Tensor latents;  // (N, C, h, w), already × scaling_factor
  Tensor logvar;   // (N, C, h, w) or undefined
  std::vector<int64_t> labels;
  LatentCacheInfo info;
};

void write_latent_cache(const std::string& path, const LatentCache& cache);  // atomically
LatentCache read_latent_cache(const std::string& path);                      // validates shapes; FormatError naming the file
LatentCacheInfo read_latent_cache_info(const std::string& path);

// Encodes (images → mean, logvar), in batches, with a progress line on stderr.
using EncodeFn = std::function<std::pair<Tensor, Tensor>(const Tensor& images)>;
LatentCache encode_latents(const LabeledImages& data, const EncodeFn& encode, const LatentCacheInfo& info, int64_t batch);

// The cache at `path` if its attributes equal `expected`; otherwise (missing or stale, with a note on stderr)
// builds it from `load_images()` and writes it.
LatentCache load_or_build_latent_cache(const std::string& path, const LatentCacheInfo& expected,
                                       const std::function<LabeledImages()>& load_images, const EncodeFn& encode,
                                       int64_t batch);

}  // namespace lcd
