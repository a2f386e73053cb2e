// Training data (see training_data.h).
#include "train/training_data.h"

#include "autograd/cpu/precision.h"

#include <cmath>
#include <filesystem>

#include "autograd/errors.h"
#include "datasets/image_folder.h"
#include "datasets/style.h"
#include "infer/io/model_io.h"

namespace lcd {

TrainingData load_training_data(const TrainConfig& c, const AutoencoderKL& vae, int64_t condition_dim) {
  TrainingData d;
  d.cond_table = load_cond_embeddings(c.model_dir, condition_dim);  // before any latent is encoded
  const int size = static_cast<int>(vae.config.sample_size);
  auto load_images = [&]() -> LabeledImages {
    if (c.data_source == "fashion-mnist") {
      LabeledImages d = load_fashion_mnist(c.data_path, c.data_split == "train" ? Split::kTrain : Split::kTest, c.data_limit);
      d.images = apply_style(d.images, c.data_style);
      return d;
    }
    ImageFolder f = load_image_folder(c.data_path, {static_cast<int>(vae.config.in_channels), size, c.labels_file});
    if (c.data_limit > 0 && f.data.images.size(0) > c.data_limit) {
      f.data.images = slice(f.data.images, 0, 0, c.data_limit);
      f.data.labels.resize(c.data_limit);
    }
    f.data.images = apply_style(f.data.images, c.data_style);
    return f.data;
  };
  LatentCacheInfo expected;
  expected.scaling_factor = vae.config.scaling_factor;
  expected.source = c.data_source == "fashion-mnist"
                        ? "fashion-mnist:" + c.data_split
                        : "folder:" + std::filesystem::absolute(c.data_path).string() + ":" + c.labels_file;
  if (!c.data_style.empty()) expected.source += ":style=" + c.data_style;
  expected.autoencoder_hash = weights_hash(vae);
  // The source size is only known after reading; count the images once (cheap next to encoding).
  LabeledImages images;
  bool loaded = false;
  auto get_images = [&]() -> LabeledImages {
    if (!loaded) {
      images = load_images();
      loaded = true;
    }
    return images;
  };
  if (c.data_source == "fashion-mnist") {
    const int64_t total = c.data_split == "train" ? 60000 : 10000;
    expected.source_size = c.data_limit > 0 ? std::min(c.data_limit, total) : total;
  } else {
    expected.source_size = get_images().images.size(0);
  }
  std::filesystem::create_directories(std::filesystem::absolute(c.latent_cache).parent_path());
  auto encode = [&](const Tensor& x) {
    // The cache is shared by runs of either precision, so it is always encoded in fp32.
    PrecisionGuard fp32(Precision::kFp32);
    DiagonalGaussian p = vae.encode(x);
    return std::make_pair(p.mean, p.logvar);
  };
  d.cache = load_or_build_latent_cache(c.latent_cache, expected, get_images, encode, c.encode_batch);
  if (d.cache.latents.size(0) != expected.source_size)
    throw FormatError(c.latent_cache + ": holds " + std::to_string(d.cache.latents.size(0)) + " latents, expected " +
                      std::to_string(expected.source_size));
  for (int64_t label : d.cache.labels)
    if (label < 0 || label >= d.unconditional_row())
      throw FormatError(c.latent_cache + ": label " + std::to_string(label) + " has no row in the model's condition table (" +
                        std::to_string(d.unconditional_row()) + " classes)");
  return d;
}

Tensor gather_latents(const TrainingData& d, const std::vector<int64_t>& idx, bool sample_posterior, Rng& rng) {
  const Tensor& lat = d.cache.latents;
  const int64_t per = lat.numel() / lat.size(0);
  Tensor z = Tensor::empty({static_cast<int64_t>(idx.size()), lat.size(1), lat.size(2), lat.size(3)});
  const float sf = static_cast<float>(d.cache.info.scaling_factor);
  const bool sample = sample_posterior && d.cache.logvar.defined();
  for (size_t i = 0; i < idx.size(); ++i)
    for (int64_t k = 0; k < per; ++k) {
      float v = lat.data()[idx[i] * per + k];
      if (sample) v += sf * std::exp(0.5f * d.cache.logvar.data()[idx[i] * per + k]) * static_cast<float>(rng.normal());
      z.data()[i * per + k] = v;
    }
  return z;
}

std::vector<int64_t> gather_labels(const TrainingData& d, const std::vector<int64_t>& idx) {
  std::vector<int64_t> labels;
  for (int64_t i : idx) labels.push_back(d.cache.labels[i]);
  return labels;
}

}  // namespace lcd
