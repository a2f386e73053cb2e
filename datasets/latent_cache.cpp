// Latent caches (see latent_cache.h).
#include "datasets/latent_cache.h"

#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <sstream>

#include "autograd/atomic_file.h"
#include "autograd/errors.h"
#include "autograd/tape.h"
#include "datasets/hdf5.h"

namespace lcd {

std::string LatentCacheInfo::describe() const {
  std::ostringstream out;
  out << "source " << source << " (" << source_size << " images), scaling_factor " << scaling_factor
      << ", autoencoder " << autoencoder_hash.substr(0, 12);
  return out.str();
}

void write_latent_cache(const std::string& path, const LatentCache& c) {
  write_through_temp_file(path, [&](const std::string& tmp) {
    Hdf5File f = Hdf5File::create(tmp);
    f.write("/latents", c.latents);
    if (c.logvar.defined()) f.write("/logvar", c.logvar);
    f.write("/labels", c.labels);
    f.set_attribute("/", "scaling_factor", c.info.scaling_factor);
    f.set_attribute("/", "source", c.info.source);
    f.set_attribute("/", "source_size", c.info.source_size);
    f.set_attribute("/", "autoencoder_hash", c.info.autoencoder_hash);
  });
}

LatentCacheInfo read_latent_cache_info(const std::string& path) {
  Hdf5File f = Hdf5File::open(path);
  LatentCacheInfo info;
  for (const char* key : {"scaling_factor", "source", "source_size", "autoencoder_hash"})
    if (!f.has_attribute("/", key)) throw FormatError(path + ": latent cache lacks the attribute " + key);
  info.scaling_factor = f.double_attribute("/", "scaling_factor");
  info.source = f.string_attribute("/", "source");
  info.source_size = f.int_attribute("/", "source_size");
  info.autoencoder_hash = f.string_attribute("/", "autoencoder_hash");
  return info;
}

LatentCache read_latent_cache(const std::string& path) {
  LatentCache c;
  c.info = read_latent_cache_info(path);
  Hdf5File f = Hdf5File::open(path);
  if (!f.exists("/latents") || !f.exists("/labels")) throw FormatError(path + ": latent cache lacks /latents or /labels");
  c.latents = f.read_tensor("/latents");
  c.labels = f.read_int64("/labels");
  if (c.latents.ndim() != 4 || c.latents.size(0) != static_cast<int64_t>(c.labels.size()))
    throw FormatError(path + ": /latents " + c.latents.shape().str() + " does not fit " +
                      std::to_string(c.labels.size()) + " labels (expected (N, C, h, w))");
  if (f.exists("/logvar")) {
    c.logvar = f.read_tensor("/logvar");
    if (c.logvar.shape() != c.latents.shape())
      throw FormatError(path + ": /logvar " + c.logvar.shape().str() + " does not match /latents " + c.latents.shape().str());
  }
  for (int64_t i = 0; i < c.latents.numel(); ++i)
    if (!std::isfinite(c.latents.data()[i])) throw FormatError(path + ": /latents holds NaN or infinite values");
  if (c.logvar.defined())
    for (int64_t i = 0; i < c.logvar.numel(); ++i)
      if (!std::isfinite(c.logvar.data()[i])) throw FormatError(path + ": /logvar holds NaN or infinite values");
  return c;
}

LatentCache encode_latents(const LabeledImages& data, const EncodeFn& encode, const LatentCacheInfo& info, int64_t batch) {
  const int64_t n = data.images.size(0);
  LatentCache c;
  c.info = info;
  c.labels = data.labels;
  const auto t0 = std::chrono::steady_clock::now();
  NoGradGuard no_grad;
  for (int64_t start = 0; start < n; start += batch) {
    const int64_t m = std::min(batch, n - start);
    const int64_t per = data.images.numel() / n;
    Tensor x = Tensor::empty({m, data.images.size(1), data.images.size(2), data.images.size(3)});
    std::copy_n(data.images.data() + start * per, m * per, x.data());
    auto [mean, logvar] = encode(x);
    if (!c.latents.defined()) {
      c.latents = Tensor::empty({n, mean.size(1), mean.size(2), mean.size(3)});
      c.logvar = Tensor::empty(c.latents.shape());
    }
    const int64_t lat = mean.numel() / m;
    for (int64_t i = 0; i < m * lat; ++i) c.latents.data()[start * lat + i] = mean.data()[i] * float(info.scaling_factor);
    std::copy_n(logvar.data(), m * lat, c.logvar.data() + start * lat);
    const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    // A live line on a terminal; in a log file, a line per tenth of the data.
    const bool tty = isatty(STDERR_FILENO);
    const int64_t tenth = std::max<int64_t>(n / 10, 1);
    if (tty || (start + m) / tenth != start / tenth || start + m == n)
      std::fprintf(stderr, "%sencoding latents: %lld/%lld images, %.1f s%s", tty ? "\r" : "",
                   static_cast<long long>(start + m), static_cast<long long>(n), elapsed, tty ? "" : "\n");
  }
  if (isatty(STDERR_FILENO)) std::fprintf(stderr, "\n");
  return c;
}

LatentCache load_or_build_latent_cache(const std::string& path, const LatentCacheInfo& expected,
                                       const std::function<LabeledImages()>& load_images, const EncodeFn& encode,
                                       int64_t batch) {
  if (std::filesystem::exists(path)) {
    // A cache of other data or another autoencoder is rebuilt; one that claims to be this data's but does not
    // read as such is refused (a cache is never damaged by lcdkit, whose writes are atomic).
    LatentCacheInfo found;
    try {
      found = read_latent_cache_info(path);
    } catch (const Error& e) {
      throw FormatError(std::string(e.what()) + " (remove the file and lcd-train rebuilds it)");
    }
    if (found == expected) return read_latent_cache(path);
    std::cerr << path << ": stale latent cache (" << found.describe() << "; expected " << expected.describe()
              << "), rebuilding\n";
  }
  LatentCache c = encode_latents(load_images(), encode, expected, batch);
  write_latent_cache(path, c);
  return c;
}

}  // namespace lcd
