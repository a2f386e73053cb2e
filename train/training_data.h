// Training data for lcd-train: the latent cache of the configured dataset (built with the teacher's
// autoencoder when missing or stale) and the condition table, with batch gathering.
#pragma once
#include <vector>

#include "autograd/random.h"
#include "datasets/latent_cache.h"
#include "infer/nn/autoencoder.h"
#include "train/config.h"

namespace lcd {

struct TrainingData {
  LatentCache cache;
  Tensor cond_table;  // (classes + 1, L, D); the last row is the unconditional embedding
  int64_t size() const { return cache.latents.size(0); }
  int64_t unconditional_row() const { return cond_table.size(0) - 1; }
};

// condition_dim: the UNet's cross_attention_dim, checked against the condition table before any encoding.
TrainingData load_training_data(const TrainConfig& config, const AutoencoderKL& vae, int64_t condition_dim);

// z0 for the batch: the cached latents, or z = (mean + e^{logvar/2} ε)·scaling_factor when sampling the posterior.
Tensor gather_latents(const TrainingData& data, const std::vector<int64_t>& indices, bool sample_posterior, Rng& rng);
std::vector<int64_t> gather_labels(const TrainingData& data, const std::vector<int64_t>& indices);

}  // namespace lcd
