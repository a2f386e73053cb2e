// UNet forward throughput. Two modes:
//  - fmnist-ldm-v1 (DESIGN.md §3), the default: samples/s and GFLOP/s at batch 64 in no-grad mode and with a
//    full backward pass, next to Eigen's raw GEMM rate on this machine.
//  - Stable Diffusion scale (issue 18), --config sd15|sd21: the model's diffusers configs (bench/sd/<name>/),
//    seeded random weights, a --size image (latents size/8): seconds per no-grad UNet evaluation at each
//    --batch, the VAE decode of one latent, and peak resident memory after each phase. --save DIR writes the
//    random-weight model folder (unet/, vae/, scheduler/) for lcm-sample and the PyTorch reference; --check
//    adds its inputs and outputs at --size for bench/pytorch/sd_torch.py check DIR. Without --save the
//    weights are inference-only, as lcm-sample keeps them (autograd/inference_weights.h).
// Usage: bench_unet [MODEL_DIR=models/fmnist-ldm-v1] [--threads N] [--batch B] [--reps R] [--forward-only]
//        bench_unet --config sd15|sd21 [--size 512] [--precision fp32|bf16] [--batch 1,2] [--reps 3] [--save DIR [--check]]
#include <Eigen/Core>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "autograd/cpu/features.h"
#include "autograd/cpu/precision.h"
#include "autograd/errors.h"
#include "autograd/flop_counter.h"
#include "autograd/gemm.h"
#include "autograd/random.h"
#include "autograd/storage.h"
#include "autograd/threads.h"
#include "bench/random_weights.h"
#include "bench/resident_memory.h"
#include "infer/io/lora_io.h"
#include "infer/io/model_io.h"
#include "infer/lora.h"
#include "infer/nn/layers.h"
#include "infer/tools/cli.h"

using namespace lcd;
using Clock = std::chrono::steady_clock;
namespace fs = std::filesystem;

static double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

static double eigen_gemm_gflops() {
  const int n = 1024;
  Eigen::MatrixXf a = Eigen::MatrixXf::Random(n, n), b = Eigen::MatrixXf::Random(n, n), c(n, n);
  gemm(c, a, b, false);
  std::vector<double> t;
  for (int i = 0; i < 5; ++i) {
    auto s = Clock::now();
    gemm(c, a, b, false);
    t.push_back(std::chrono::duration<double>(Clock::now() - s).count());
  }
  return 2.0 * n * n * n / median(t) * 1e-9;
}

template <typename F>
static std::vector<double> time_runs(int reps, F&& f) {
  std::vector<double> t;
  for (int r = 0; r < reps; ++r) {
    auto s = Clock::now();
    f();
    t.push_back(std::chrono::duration<double>(Clock::now() - s).count());
  }
  return t;
}

static int fmnist_bench(const std::string& dir, int batch, int reps, bool backward, int threads) {
  auto unet = load_unet(dir + "/unet");
  Tensor table = load_cond_embeddings(dir);
  std::mt19937_64 rng(0);
  std::normal_distribution<float> normal;
  Tensor x = Tensor::empty({batch, unet->config.in_channels, 8, 8});
  for (int64_t i = 0; i < x.numel(); ++i) x.data()[i] = normal(rng);
  std::vector<int64_t> labels(batch);
  std::vector<double> t(batch);
  for (int b = 0; b < batch; ++b) {
    labels[b] = b % 10;
    t[b] = 999 - 20 * (b % 50);
  }
  Tensor context = embedding(table, labels);

  FlopCounter::enabled() = true;
  {
    NoGradGuard g;
    unet->forward(x, t, context);
  }
  const double fwd_flops = double(FlopCounter::count().load());
  FlopCounter::enabled() = false;

  const std::vector<double> nograd = time_runs(reps, [&] {
    NoGradGuard g;
    unet->forward(x, t, context);
  });
  std::vector<double> train;
  for (auto& [name, p] : unet->named_parameters()) p->set_requires_grad(true);
  for (int r = 0; r < (backward ? reps + 1 : 0); ++r) {
    for (auto& [name, p] : unet->named_parameters()) p->zero_grad();
    auto s = Clock::now();
    sum(unet->forward(x, t, context)).backward();
    if (r > 0) train.push_back(std::chrono::duration<double>(Clock::now() - s).count());  // first run allocates grads
  }
  const double gemm = eigen_gemm_gflops();
  if (train.empty()) train.push_back(0);
  const double tn = median(nograd), tt = median(train);
  std::printf("fmnist-ldm-v1 UNet, batch %d, %d threads, %.2f GFLOP per forward (GEMM-based ops)\n", batch, threads,
              fwd_flops * 1e-9);
  std::printf("%-22s %10s %10s %10s %12s\n", "mode", "median s", "samples/s", "GFLOP/s", "of Eigen GEMM");
  std::printf("%-22s %10.4f %10.1f %10.1f %11.0f%%\n", "no-grad forward", tn, batch / tn, fwd_flops / tn * 1e-9,
              100 * fwd_flops / tn * 1e-9 / gemm);
  std::printf("%-22s %10.4f %10.1f %10.1f %11.0f%%\n", "forward + backward", tt, batch / tt,
              3 * fwd_flops / tt * 1e-9, 100 * 3 * fwd_flops / tt * 1e-9 / gemm);
  std::printf("%-22s %10s %10s %10.1f\n", "GEMM 1024^3 (Eigen)", "", "", gemm);
  return 0;
}

static nlohmann::json read_json(const fs::path& path) {
  std::ifstream in(path);
  if (!in) throw IoError("cannot open " + path.string());
  return nlohmann::json::parse(in);
}

static std::vector<int> parse_batches(const std::string& text) {
  std::vector<int> out;
  std::stringstream ss(text);
  for (std::string item; std::getline(ss, item, ',');) out.push_back(parse_int("--batch", item, 1, 64));
  return out;
}

static void write_random_lora(UNet2DConditionModel& unet, int64_t rank, const std::string& path);
static void attention_check(const UNetConfig& config, int64_t latent);

// Stable Diffusion-scale timings with random weights (issue 18).
static int sd_bench(const std::string& name, int size, const std::vector<int>& batches, int reps, bool vae_too,
                    const std::string& save_dir, DType save_dtype, int lora_rank, int threads) {
  const fs::path configs = fs::path(LCDKIT_SOURCE_DIR) / "bench" / "sd" / name;
  if (!fs::exists(configs / "unet" / "config.json"))
    throw UsageError("--config " + name + ": no " + (configs / "unet" / "config.json").string() + " (sd15 or sd21)");
  if (size % 64 != 0 || size < 64) throw UsageError("--size " + std::to_string(size) + ": must be a multiple of 64");
  const int64_t latent = size / 8;
  std::printf("%s at %d² (latents %lld²), %d threads, precision %s, CPU %s\n", name.c_str(), size,
              static_cast<long long>(latent), threads, precision_name(compute_precision()),
              cpu::features().model.c_str());
  reset_peak_resident();
  auto config = UNetConfig::from_json(read_json(configs / "unet" / "config.json"), (configs / "unet").string());
  UNet2DConditionModel unet(config);
  fill_random_weights(unet, 0);
  std::printf("UNet: %.1f M parameters (%.2f GB in float32); peak resident after building: %.2f GB\n",
              unet.parameter_count() * 1e-6, unet.parameter_count() * 4e-9, peak_resident_gb());
  // As lcm-sample runs it: weights in the kernels' forms only (kept in float32 when they are to be saved).
  const bool inference_only = save_dir.empty();
  if (inference_only) {
    const int64_t freed = keep_forward_forms_only(unet);
    release_cached_storage();
    std::printf("inference-only weights: %.2f GB of float32 values replaced by their %s forward forms; resident now %.2f GB\n",
                freed * 1e-9, precision_name(compute_precision()), resident_gb());
  }

  Rng rng(1);
  for (int batch : batches) {
    Tensor x = rng.normal_tensor(Shape{batch, config.in_channels, latent, latent});        // (B, 4, h, w)
    Tensor context = rng.normal_tensor(Shape{batch, 77, config.cross_attention_dim});    // (B, 77, D)
    const std::vector<double> t(batch, 999.0);
    NoGradGuard no_grad;
    FlopCounter::enabled() = true;
    FlopCounter::count() = 0;
    reset_peak_resident();
    unet.forward(x, t, context);  // also the warm-up: packs the weights
    const double flops = double(FlopCounter::count().load());
    FlopCounter::enabled() = false;
    const std::vector<double> times = time_runs(reps, [&] { unet.forward(x, t, context); });
    const double s = median(times);
    std::printf("unet batch %d: median %.3f s per evaluation (%d runs, min %.3f), %.1f GFLOP, %.0f GFLOP/s, "
                "peak resident %.2f GB\n",
                batch, s, reps, *std::min_element(times.begin(), times.end()), flops * 1e-9, flops / s * 1e-9,
                peak_resident_gb());
  }

  if (vae_too || !save_dir.empty()) {
    auto vae_config = AutoencoderConfig::from_json(read_json(configs / "vae" / "config.json"), (configs / "vae").string());
    AutoencoderKL vae(vae_config);
    fill_random_weights(vae, 2);
    if (inference_only) keep_forward_forms_only(vae);
    if (vae_too) {
      Tensor z = rng.normal_tensor(Shape{1, vae_config.latent_channels, latent, latent});  // (1, 4, h, w)
      NoGradGuard no_grad;
      FlopCounter::enabled() = true;
      FlopCounter::count() = 0;
      reset_peak_resident();
      vae.decode(z);
      const double flops = double(FlopCounter::count().load());
      FlopCounter::enabled() = false;
      const std::vector<double> times = time_runs(reps, [&] { vae.decode(z); });
      const double s = median(times);
      std::printf("vae decode 1 image: median %.3f s (%d runs), %.1f GFLOP, %.0f GFLOP/s, peak resident %.2f GB\n", s,
                  reps, flops * 1e-9, flops / s * 1e-9, peak_resident_gb());
    }
    if (!save_dir.empty()) {
      const fs::path out(save_dir);
      save_module(unet, unet.config.raw, (out / "unet").string(), save_dtype);
      save_module(vae, vae.config.raw, (out / "vae").string(), save_dtype);
      // A prompt embedding stand-in for lcm-sample --cond (CLIP's (1, 77, D) hidden states, O(1) values).
      write_safetensors((out / "cond.safetensors").string(),
                        {{"cond", rng.normal_tensor(Shape{1, 77, config.cross_attention_dim})},
                         {"uncond", rng.normal_tensor(Shape{1, 77, config.cross_attention_dim})}});
      fs::create_directories(out / "scheduler");
      fs::copy_file(configs / "scheduler" / "scheduler_config.json", out / "scheduler" / "scheduler_config.json",
                    fs::copy_options::overwrite_existing);
      std::printf("wrote the random-weight model to %s\n", save_dir.c_str());
      if (lora_rank > 0)
        write_random_lora(unet, lora_rank, (out / ("lora-r" + std::to_string(lora_rank) + ".safetensors")).string());
    }
  }
  if (size >= 512) attention_check(config, latent);
  return 0;
}

// The tiled no-grad attention against the untiled one (taken when the query records a gradient, float32) at
// the UNet's largest self-attention: every latent pixel a token, the first level's channels and heads; the
// tiled one in float32, and in bf16 too when that is the run's precision.
static void attention_check(const UNetConfig& config, int64_t latent) {
  const int64_t tokens = latent * latent, channels = config.block_out_channels[0];
  const int heads = config.heads[0];
  Rng rng(9);
  const Tensor q = rng.normal_tensor(Shape{1, tokens, channels}), k = rng.normal_tensor(Shape{1, tokens, channels}),
               v = rng.normal_tensor(Shape{1, tokens, channels});
  const Precision run_precision = compute_precision();
  PrecisionGuard fp32(Precision::kFp32);
  Tensor qg = q.clone();
  qg.set_requires_grad(true);
  const Tensor whole = attention(qg, k, v, heads).detach();
  std::vector<Precision> precisions{Precision::kFp32};
  if (run_precision == Precision::kBf16) precisions.push_back(Precision::kBf16);
  for (Precision p : precisions) {
    PrecisionGuard guard(p);
    Tensor tiled;
    {
      NoGradGuard no_grad;
      tiled = attention(q, k, v, heads);
    }
    double worst = 0, largest = 0;
    for (int64_t i = 0; i < whole.numel(); ++i) {
      worst = std::max(worst, double(std::abs(tiled.data()[i] - whole.data()[i])));
      largest = std::max(largest, double(std::abs(whole.data()[i])));
    }
    std::printf("attention %lld tokens, %lld channels, %d heads: tiled (%s) vs untiled (fp32) max difference %.2e of the largest value\n",
                static_cast<long long>(tokens), static_cast<long long>(channels), heads, precision_name(p), worst / largest);
  }
}

// A random rank-`rank` adapter on every default LoRA target of `unet` (diffusers format, F16): the LCM-LoRA
// stand-in of the end-to-end timing.
static void write_random_lora(UNet2DConditionModel& unet, int64_t rank, const std::string& path) {
  Rng rng(4);
  LoraAdapter adapter;
  for (auto& [name, m] : lora_target_modules(unet, default_lora_targets()))
    adapter.modules[name] = random_lora_factors(m->lora_layer()->weight.shape(), rank, rng);
  write_lora(path, adapter, LoraFormat::kDiffusers, DType::kF16);
  std::printf("wrote a random rank-%lld adapter on %zu modules to %s\n", static_cast<long long>(rank),
              adapter.modules.size(), path.c_str());
}

// For the PyTorch reference's check (bench/pytorch/sd_torch.py check DIR): the saved model loaded back from
// DIR, run on seeded inputs at `size` (two samples at different timesteps, 77 context tokens), inputs and
// outputs written to DIR/check.safetensors.
static void write_check(const std::string& dir, int size) {
  const int64_t latent = size / 8;
  auto unet = load_unet(dir + "/unet");
  auto vae = load_autoencoder(dir + "/vae");
  Rng rng(3);
  Tensor x = rng.normal_tensor(Shape{2, unet->config.in_channels, latent, latent});      // (2, 4, h, w)
  Tensor context = rng.normal_tensor(Shape{2, 77, unet->config.cross_attention_dim});  // (2, 77, D)
  const std::vector<double> t = {999.0, 259.0};
  Tensor z = rng.normal_tensor(Shape{1, vae->config.latent_channels, latent, latent});  // (1, 4, h, w)
  NoGradGuard no_grad;
  Tensor out = unet->forward(x, t, context);  // (2, 4, h, w)
  Tensor image = vae->decode(z);              // (1, 3, H, W)
  Tensor timesteps = Tensor::empty({2});
  for (int i = 0; i < 2; ++i) timesteps.data()[i] = static_cast<float>(t[i]);
  write_safetensors(dir + "/check.safetensors", {{"sample", x}, {"timesteps", timesteps}, {"context", context},
                                                 {"unet_out", out}, {"latents", z}, {"vae_out", image}});
  std::printf("wrote %s/check.safetensors (inputs and lcdkit's outputs at %d²)\n", dir.c_str(), size);
}

int main(int argc, char** argv) {
  return run_tool("bench_unet", [&] {
    std::string dir = "models/fmnist-ldm-v1", threads, batch, reps, config, size = "512", precision = "fp32", save,
                lora_rank = "0", save_dtype = "f32";
    bool forward_only = false, no_vae = false, check = false;
    ArgParser p("bench_unet", "[MODEL_DIR]", "UNet forward throughput: fmnist-ldm-v1, or Stable Diffusion configs with random weights.");
    p.positional("MODEL_DIR", "lcdkit model folder for the fmnist mode (default models/fmnist-ldm-v1)", &dir, false);
    p.threads(&threads);
    p.option("--batch", "B[,B…]", "batch size (fmnist: one, default 64; --config: a list, default 1,2)", &batch);
    p.option("--reps", "R", "timed runs per measurement (default 5 fmnist, 3 --config)", &reps);
    p.flag("--forward-only", "fmnist mode: skip the backward timing", &forward_only);
    p.option("--config", "NAME", "sd15 or sd21: Stable Diffusion configs from bench/sd/NAME with random weights", &config);
    p.option("--size", "PX", "--config: image size in pixels (default 512)", &size);
    p.option("--precision", "P", kPrecisionHelp, &precision);
    p.flag("--no-vae", "--config: skip the VAE decode timing", &no_vae);
    p.option("--save", "DIR", "--config: write the random-weight model folder (unet/, vae/, scheduler/) here", &save);
    p.option("--save-dtype", "T", "f32 (default) or f16: the dtype of the saved weights", &save_dtype);
    p.option("--lora-rank", "R", "with --save: also write DIR/lora-rR.safetensors, a random rank-R adapter", &lora_rank);
    p.flag("--check", "with --save: load the saved model back and write DIR/check.safetensors (inputs and outputs "
           "at --size) for bench/pytorch/sd_torch.py check DIR", &check);
    if (!p.parse(argc, argv)) return 0;
    apply_threads(threads.empty() ? "2" : threads);
    apply_precision(precision, "bench_unet", "--precision");
    const int n_threads = num_threads();
    if (config.empty())
      return fmnist_bench(dir, batch.empty() ? 64 : parse_int("--batch", batch, 1, 4096),
                          reps.empty() ? 5 : parse_int("--reps", reps, 1, 1000), !forward_only, n_threads);
    if (check && save.empty()) throw UsageError("--check needs --save DIR");
    const int px = parse_int("--size", size, 64, 4096);
    const int rc = sd_bench(config, px, parse_batches(batch.empty() ? "1,2" : batch),
                            reps.empty() ? 3 : parse_int("--reps", reps, 1, 1000), !no_vae, save,
                            save_dtype == "f16" ? DType::kF16 : save_dtype == "f32" ? DType::kF32
                                : throw UsageError("--save-dtype " + save_dtype + ": must be f32 or f16"),
                            parse_int("--lora-rank", lora_rank, 0, 1024), n_threads);
    if (check) write_check(save, px);
    return rc;
  });
}
