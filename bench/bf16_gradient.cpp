// How closely bf16's LCD gradient follows fp32's, at an adapter (typically a trained one, where the
// distillation's signal is smallest). For each of --batches batches of real latents (the configuration's
// settings: guidance 3, pseudo-Huber c = 0.001, EMA = online), the LoRA gradient of one LCD step is computed in
// fp32 and in bf16 from the same inputs; printed: its fp32 norm, bf16's norm, the relative error
// |g_bf16 − g_fp32| / |g_fp32| and the cosine between them. For scale, the cosine between consecutive
// batches' fp32 gradients (the minibatch noise the optimiser already averages over).
// Usage: bench_bf16_gradient --lora ADAPTER [--model DIR] [--latents H5] [--batch B] [--batches N] [--threads N]
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <vector>

#include "autograd/cpu/precision.h"
#include "autograd/errors.h"
#include "autograd/ops.h"
#include "autograd/random.h"
#include "datasets/latent_cache.h"
#include "infer/io/lora_io.h"
#include "infer/io/model_io.h"
#include "infer/nn/config_check.h"
#include "infer/schedule.h"
#include "infer/tools/cli.h"
#include "train/lcd_objective.h"
#include "train/trainable_lora.h"
#include "train/training_data.h"

using namespace lcd;
namespace fs = std::filesystem;

namespace {

double dot(const std::vector<double>& a, const std::vector<double>& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

double cosine(const std::vector<double>& a, const std::vector<double>& b) {
  return dot(a, b) / std::sqrt(dot(a, a) * dot(b, b));
}

}  // namespace

int main(int argc, char** argv) {
  return run_tool("bench_bf16_gradient", [&] {
    std::string model = "models/fmnist-ldm-v1", latents = "runs/latents-fashion-mnist-train.h5", adapter, threads;
    std::string batch = "128", batches = "4";
    ArgParser p("bench_bf16_gradient", "--lora ADAPTER [options]",
                "Compares the LCD step's LoRA gradient in bf16 with fp32's at an adapter.");
    p.option("--lora", "FILE", "the adapter (online and target factors)", &adapter);
    p.option("--model", "DIR", "model directory", &model);
    p.option("--latents", "H5", "latent cache of the training set (lcd-train writes one)", &latents);
    p.option("--batch", "B", "samples per batch", &batch);
    p.option("--batches", "N", "batches compared", &batches);
    p.threads(&threads);
    if (!p.parse(argc, argv)) return 0;
    if (adapter.empty()) throw UsageError("--lora is required");
    apply_threads(threads);
    if (!bf16_supported()) throw UsageError("this CPU does not compute bf16 natively; nothing to compare");
    const int64_t n = parse_int("--batch", batch, 1);
    const int count = static_cast<int>(parse_int("--batches", batches, 1));

    auto unet = load_unet((fs::path(model) / "unet").string());
    TrainingData data;
    data.cache = read_latent_cache(latents);
    data.cond_table = load_cond_embeddings(model);
    const NoiseSchedule schedule = NoiseSchedule::from_config(
        read_json_file((fs::path(model) / "scheduler/scheduler_config.json").string()), "scheduler_config.json");
    const LoraAdapter a = read_lora(adapter);
    TrainableLora lora(*unet, a);
    lora.set_ema(a);
    const LcdSettings settings;  // pseudo-Huber, c = 0.001, DDIM Ψ, N = 50
    auto gradient = [&](const LcdBatch& b, Precision precision) {
      PrecisionGuard guard(precision);
      lora.online().zero_grad();
      lcd_loss_and_gradients(*unet, lora, schedule, settings, b);
      return std::vector<double>(lora.online().grads(), lora.online().grads() + lora.online().size());
    };

    std::printf("batch  |g fp32|  |g bf16|  rel err  cos(bf16, fp32)  cos(fp32, previous batch's fp32)\n");
    std::vector<double> previous;
    for (int k = 0; k < count; ++k) {
      Rng rng(100 + k);
      std::vector<int64_t> rows;
      for (int64_t i = 0; i < n; ++i) rows.push_back(rng.uniform_int(data.size()));
      LcdBatch b;
      b.z0 = gather_latents(data, rows, false, rng);  // (B, C, H, W)
      for (int64_t i = 0; i < n; ++i) {
        b.j.push_back(draw_grid_index(rng, settings));
        b.guidance.push_back(3.0);
      }
      b.eps = rng.normal_tensor(b.z0.shape());  // (B, C, H, W)
      {
        NoGradGuard g;
        b.cond = embedding(data.cond_table, gather_labels(data, rows));                             // (B, L, D)
        b.uncond = embedding(data.cond_table, std::vector<int64_t>(n, data.unconditional_row()));  // (B, L, D)
      }
      const std::vector<double> g32 = gradient(b, Precision::kFp32), g16 = gradient(b, Precision::kBf16);
      std::vector<double> diff(g32.size());
      for (size_t i = 0; i < diff.size(); ++i) diff[i] = g16[i] - g32[i];
      const double norm32 = std::sqrt(dot(g32, g32));
      std::printf("%5d  %8.4f  %8.4f  %7.3f  %15.3f", k, norm32, std::sqrt(dot(g16, g16)),
                  std::sqrt(dot(diff, diff)) / norm32, cosine(g16, g32));
      if (!previous.empty()) std::printf("  %31.3f", cosine(g32, previous));
      std::printf("\n");
      std::fflush(stdout);
      previous = g32;
    }
    return 0;
  });
}
