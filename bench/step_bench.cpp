// lcdkit's side of the PyTorch comparison (issue 8; bench/pytorch/bench_torch.py is the other side, with the
// same cases, inputs' shapes and settings). One case per process, so that the peak resident memory printed is
// that case's own:
//   unet-fwd        no-grad UNet forward, batch 64 (unet-fwd-128: batch 128)
//   diffusion-step  full-network teacher training step, batch 64: ε-MSE, backward, clip to 1, AdamW
//   lcd-step        LCD-LoRA step, batch 32 (lcd-step-128: batch 128, the quickstart's), rank 16: teacher
//                   (cond+uncond), DDIM Ψ, EMA target, student with backward, clip to 1, AdamW, EMA update (configs/fmnist-lcm-lora.json's settings)
//   lcm4            LCM 4-step sampling of 64 latents, then VAE decode
//   ddim50          DDIM 50-step sampling of 64 latents with CFG (s = 2), then VAE decode
//   lcm4-latents, ddim50-latents   the same without the decode (the solver loops alone)
// Prints one line: case, median seconds over --reps runs after --warmup runs, peak RSS in MiB, and the GFLOP
// of one run (autograd/flop_counter.h: every GEMM-shaped multiply-add, forward and backward).
// LCDKIT_BENCH_MIN=1 also prints the fastest run ("min S", stderr): on a shared VM, where other guests slow
// some runs, it is the steadier figure for an A/B comparison of two builds.
// Usage: bench_steps --case NAME [--model DIR] [--threads N] [--reps R] [--warmup W]
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>

#include "autograd/cpu/precision.h"
#include "autograd/errors.h"
#include "autograd/flat_parameters.h"
#include "autograd/flop_counter.h"
#include "autograd/ops.h"
#include "autograd/random.h"
#include "autograd/threads.h"
#include "infer/io/model_io.h"
#include "infer/nn/config_check.h"
#include "infer/samplers.h"
#include "infer/tools/cli.h"
#include "train/adamw.h"
#include "train/diffusion_objective.h"
#include "train/lcd_objective.h"
#include "train/trainable_lora.h"

using namespace lcd;
namespace fs = std::filesystem;

namespace {

double peak_rss_mib() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return u.ru_maxrss / 1024.0;  // Linux: KiB
}

}  // namespace

int main(int argc, char** argv) {
  return run_tool("bench_steps", [&] {
    std::string which, model = "models/fmnist-ldm-v1", threads, reps = "5", warmup = "1", precision = "fp32";
    ArgParser p("bench_steps", "--case NAME [options]",
                "Times one lcdkit workload of the PyTorch comparison (see bench/pytorch/compare.sh).");
    p.option("--case", "NAME", "unet-fwd, unet-fwd-128, diffusion-step, lcd-step, lcd-step-128, lcm4, ddim50, lcm4-latents or ddim50-latents", &which);
    p.option("--model", "DIR", "model directory", &model);
    p.threads(&threads);
    p.option("--reps", "R", "timed runs", &reps);
    p.option("--warmup", "W", "untimed runs first", &warmup);
    p.option("--precision", "P", kPrecisionHelp, &precision);
    if (!p.parse(argc, argv)) return 0;
    apply_threads(threads);
    apply_precision(precision, "bench_steps", "--precision");

    auto unet = load_unet((fs::path(model) / "unet").string());
    const Tensor table = load_cond_embeddings(model);
    const int64_t uncond_row = table.size(0) - 1;
    const NoiseSchedule schedule = NoiseSchedule::from_config(
        read_json_file((fs::path(model) / "scheduler/scheduler_config.json").string()), "scheduler_config.json");
    Rng rng(0);
    auto labels_of = [&](int64_t n) {
      std::vector<int64_t> l;
      for (int64_t i = 0; i < n; ++i) l.push_back(i % 10);
      return l;
    };
    const Shape latent_shape{64, unet->config.in_channels, 8, 8};
    std::function<void()> run;

    // Each case's state lives here so that setup is not timed.
    std::unique_ptr<TrainableLora> lora;
    FlatParameters full;
    std::unique_ptr<AdamW> adam;
    std::unique_ptr<AutoencoderKL> vae;

    if (which == "unet-fwd" || which == "unet-fwd-128") {
      const int64_t b = which == "unet-fwd" ? 64 : 128;
      run = [&, b] {
        NoGradGuard g;
        std::vector<double> t;
        for (int64_t i = 0; i < b; ++i) t.push_back(rng.uniform_int(1000));
        unet->forward(rng.normal_tensor({b, unet->config.in_channels, 8, 8}), t, embedding(table, labels_of(b)));
      };
    } else if (which == "diffusion-step") {
      std::vector<std::pair<std::string, Tensor>> all;
      for (auto& [name, t] : unet->named_parameters()) all.emplace_back(name, *t);
      full = FlatParameters(all);
      adam = std::make_unique<AdamW>(full, AdamWConfig{});
      run = [&] {
        DiffusionBatch b;
        b.z0 = rng.normal_tensor(latent_shape);
        b.eps = rng.normal_tensor(latent_shape);
        for (int i = 0; i < 64; ++i) b.t.push_back(static_cast<int>(rng.uniform_int(1000)));
        {
          NoGradGuard g;
          b.cond = embedding(table, labels_of(64));
        }
        full.zero_grad();
        diffusion_loss_and_gradients(*unet, schedule, b, full);
        full.clip_grad_norm(1.0);
        adam->step(1e-5);
      };
    } else if (which == "lcd-step" || which == "lcd-step-128") {
      const int64_t n = which == "lcd-step" ? 32 : 128;
      LoraSettings settings;
      settings.rank = 16;
      settings.alpha = 16;
      lora = std::make_unique<TrainableLora>(*unet, settings, rng);
      adam = std::make_unique<AdamW>(lora->online(), AdamWConfig{});
      run = [&, n] {
        LcdBatch b;
        b.z0 = rng.normal_tensor(Shape{n, unet->config.in_channels, 8, 8});
        b.eps = rng.normal_tensor(b.z0.shape());
        for (int64_t i = 0; i < n; ++i) {
          b.j.push_back(static_cast<int>(rng.uniform_int(50)));
          b.guidance.push_back(3.0);
        }
        {
          NoGradGuard g;
          b.cond = embedding(table, labels_of(n));
          b.uncond = embedding(table, std::vector<int64_t>(n, uncond_row));
        }
        lora->online().zero_grad();
        lcd_loss_and_gradients(*unet, *lora, schedule, LcdSettings{}, b);
        lora->online().clip_grad_norm(1.0);
        adam->step(1e-4);
        lora->update_ema(0.95);
      };
    } else if (which == "lcm4" || which == "ddim50" || which == "lcm4-latents" || which == "ddim50-latents") {
      const bool decode = which.find("-latents") == std::string::npos, lcm = which.rfind("lcm", 0) == 0;
      vae = load_autoencoder((fs::path(model) / "vae").string());
      run = [&, decode, lcm] {
        NoGradGuard g;
        BatchNoise noise(1, 0, 64);
        Tensor z = noise.draw(latent_shape);
        Conditioning c{embedding(table, labels_of(64)), embedding(table, {uncond_row}), lcm ? 1.0 : 2.0};
        Tensor lat = find_sampler(lcm ? "lcm" : "ddim").run(schedule, unet_denoiser(*unet, c), z, {lcm ? 4 : 50, 0.0, &noise});
        if (decode) vae->decode(scale(lat, 1.0 / vae->config.scaling_factor));
      };
    } else {
      throw UsageError("--case: unknown \"" + which + "\" (unet-fwd, unet-fwd-128, diffusion-step, lcd-step, lcd-step-128, lcm4, ddim50, lcm4-latents, ddim50-latents)");
    }

    for (int i = 0; i < parse_int("--warmup", warmup); ++i) run();
    std::vector<double> seconds;
    for (int i = 0; i < parse_int("--reps", reps); ++i) {
      const auto t0 = std::chrono::steady_clock::now();
      run();
      seconds.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    std::sort(seconds.begin(), seconds.end());
    if (std::getenv("LCDKIT_BENCH_MIN")) std::fprintf(stderr, "min %.4f\n", seconds.front());
    const double rss = peak_rss_mib();
    FlopCounter::count() = 0;
    FlopCounter::enabled() = true;
    run();
    FlopCounter::enabled() = false;
    std::printf("%s %.4f %.1f %.3f\n", which.c_str(), seconds[seconds.size() / 2], rss, FlopCounter::count().load() / 1e9);
    return 0;
  });
}
