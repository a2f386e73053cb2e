// lcm-sample (see lcm_sample.h).
#include "infer/tools/lcm_sample.h"

#include <chrono>
#include <cmath>
#include <filesystem>
#include <iostream>
#include <sstream>

#include "autograd/errors.h"
#include "autograd/threads.h"
#include "datasets/png.h"
#include "infer/io/lora_io.h"
#include "infer/io/model_io.h"
#include "infer/nn/config_check.h"
#include "infer/samplers.h"
#include "infer/tools/cli.h"

namespace lcd {

namespace fs = std::filesystem;

namespace {

struct Options {
  std::string model, unet, vae, sampler = "lcm", steps, guidance, labels, per_label = "1", cond, noise, seed = "0",
                                     num, batch = "64", latents_out, out, out_dir, threads, precision;
  std::vector<std::string> loras;
};

std::vector<int64_t> parse_labels(const std::string& text, int64_t classes) {
  std::vector<int64_t> labels;
  if (text == "all") {
    for (int64_t k = 0; k < classes; ++k) labels.push_back(k);
    return labels;
  }
  std::stringstream in(text);
  for (std::string item; std::getline(in, item, ',');) {
    const int v = parse_int("--labels", item);
    if (v < 0 || v >= classes)
      throw UsageError("--labels: " + std::to_string(v) + " is not a class of this model (0.." + std::to_string(classes - 1) + ")");
    labels.push_back(v);
  }
  if (labels.empty()) throw UsageError("--labels is empty");
  return labels;
}

Tensor rows_of(const Tensor& x, int64_t start, int64_t count) { return slice(x, 0, start, count); }

}  // namespace

int lcm_sample_command(int argc, char** argv) {
  Options o;
  ArgParser p("lcm-sample", "--model DIR (--labels L | --cond FILE) [options]",
              "Samples latents with LCM (1-8 steps, for a model with an LCM-LoRA) or with the teacher's DDIM or\n"
              "DPM-Solver++(2M) with classifier-free guidance, then decodes them to PNG.");
  p.option("--model", "DIR", "model directory (unet/, vae/, scheduler/, cond_embeddings.safetensors)", &o.model);
  p.option("--unet", "DIR", "UNet directory (instead of DIR/unet)", &o.unet);
  p.option("--vae", "DIR", "autoencoder directory (instead of DIR/vae)", &o.vae);
  p.repeated("--lora", "FILE[:WEIGHT]", "LoRA adapter (PEFT or kohya keys), merged with WEIGHT (default 1); repeatable", &o.loras);
  p.option("--sampler", "NAME", "lcm, ddim or dpmpp-2m", &o.sampler);
  p.option("--steps", "N", "sampling steps (default: 4 for lcm, 50 for ddim, 20 for dpmpp-2m)", &o.steps);
  p.option("--guidance", "S", "guidance scale s, ε = ε_u + s(ε_c − ε_u); 1 = off (default: 1 for lcm, 2 otherwise)", &o.guidance);
  p.option("--labels", "L", "comma-separated class labels (rows of the model's condition table), or all", &o.labels);
  p.option("--per-label", "N", "samples per label", &o.per_label);
  p.option("--cond", "FILE", "safetensors with cond (B,L,D) and optionally uncond (B or 1,L,D)", &o.cond);
  p.option("--noise", "FILE", "safetensors with the initial latents noise (B,C,H,W)", &o.noise);
  p.option("--seed", "N", "seed of the initial latents and of LCM's per-step noise", &o.seed);
  p.option("--num", "B", "number of samples (must match the conditions)", &o.num);
  p.option("--batch", "N", "samples per forward pass", &o.batch);
  p.option("--latents-out", "FILE", "write the final latents (tensor latents) before decoding", &o.latents_out);
  p.option("--out", "GRID.png", "write a grid of all samples", &o.out);
  p.option("--out-dir", "DIR", "write one PNG per sample, named <label>_<index>.png", &o.out_dir);
  p.option("--threads", "N", "threads (OpenMP and GEMM)", &o.threads);
  p.option("--precision", "P", kPrecisionHelp, &o.precision);
  if (!p.parse(argc, argv)) return 0;

  if (!o.threads.empty()) set_num_threads(parse_int("--threads", o.threads));
  apply_precision(o.precision, "lcm-sample", "--precision");
  if (o.model.empty() && o.unet.empty()) throw UsageError("give --model DIR (or --unet DIR)");
  if (o.out.empty() && o.out_dir.empty() && o.latents_out.empty())
    throw UsageError("nothing to write: give --out, --out-dir or --latents-out");
  if (o.labels.empty() == o.cond.empty()) throw UsageError("give exactly one of --labels and --cond");
  const bool lcm = o.sampler == "lcm";
  if (!lcm && o.sampler != "ddim" && o.sampler != "dpmpp-2m")
    throw UsageError("--sampler must be lcm, ddim or dpmpp-2m, got \"" + o.sampler + "\"");
  const int steps = o.steps.empty() ? (lcm ? 4 : o.sampler == "ddim" ? 50 : 20) : parse_int("--steps", o.steps);
  const double guidance = o.guidance.empty() ? (lcm ? 1.0 : 2.0) : parse_double("--guidance", o.guidance);
  const int batch = parse_int("--batch", o.batch), per_label = parse_int("--per-label", o.per_label);
  if (steps < 1) throw UsageError("--steps must be at least 1");
  if (batch < 1) throw UsageError("--batch must be at least 1");
  if (per_label < 1) throw UsageError("--per-label must be at least 1");
  const uint64_t seed = static_cast<uint64_t>(parse_int("--seed", o.seed));

  const std::string unet_dir = o.unet.empty() ? (fs::path(o.model) / "unet").string() : o.unet;
  auto unet = load_unet(unet_dir);
  for (const auto& spec : o.loras) {
    auto [path, weight] = parse_weighted_path("--lora", spec);
    merge_lora(*unet, read_lora(path), weight);
  }
  NoiseSchedule schedule = NoiseSchedule::scaled_linear();
  if (!o.model.empty() && fs::exists(fs::path(o.model) / "scheduler/scheduler_config.json")) {
    const std::string path = (fs::path(o.model) / "scheduler/scheduler_config.json").string();
    schedule = NoiseSchedule::from_config(read_json_file(path), path);
  }

  // Conditions.
  Tensor cond, uncond;
  std::vector<std::string> names;  // per sample, for --out-dir
  if (!o.labels.empty()) {
    if (o.model.empty()) throw UsageError("--labels needs --model (its cond_embeddings table)");
    Tensor table = load_cond_embeddings(o.model);
    std::vector<int64_t> rows;
    for (int64_t label : parse_labels(o.labels, table.size(0) - 1))
      for (int k = 0; k < per_label; ++k) {
        rows.push_back(label);
        names.push_back(std::to_string(label));
      }
    NoGradGuard g;
    cond = embedding(table, rows);
    uncond = embedding(table, {table.size(0) - 1});
  } else {
    SafetensorsFile f = SafetensorsFile::read(o.cond);
    cond = f.tensor("cond");
    if (f.contains("uncond")) uncond = f.tensor("uncond");
    else if (!o.model.empty() && fs::exists(fs::path(o.model) / "cond_embeddings.safetensors")) {
      Tensor table = load_cond_embeddings(o.model);
      uncond = slice(table, 0, table.size(0) - 1, 1);
    }
    names.assign(cond.size(0), "cond");
  }
  const int64_t n = cond.size(0);
  if (cond.ndim() != 3 || cond.size(2) != unet->config.cross_attention_dim)
    throw ShapeError("conditions " + cond.shape().str() + " are not (B, L, " + std::to_string(unet->config.cross_attention_dim) + ")");
  if (guidance != 1.0 && !uncond.defined())
    throw UsageError("--guidance " + o.guidance + " needs an unconditional embedding (uncond in --cond, or --model)");
  if (!o.num.empty() && parse_int("--num", o.num) != n)
    throw UsageError("--num " + o.num + " does not match the " + std::to_string(n) + " conditions");

  // Initial latents.
  const int64_t size = unet->config.raw.value("sample_size", 8);
  const Shape latent_shape{n, unet->config.in_channels, size, size};
  Tensor noise;
  if (!o.noise.empty()) {
    noise = SafetensorsFile::read(o.noise).tensor("noise");
    if (noise.ndim() != 4 || noise.size(0) != n || noise.size(1) != unet->config.in_channels)
      throw ShapeError(o.noise + ": noise " + noise.shape().str() + " does not fit " + std::to_string(n) +
                       " samples of " + std::to_string(unet->config.in_channels) + " channels");
  }

  Tensor latents = Tensor::empty(noise.defined() ? noise.shape() : latent_shape);
  const auto t0 = std::chrono::steady_clock::now();
  for (int64_t start = 0; start < n; start += batch) {
    const int64_t m = std::min<int64_t>(batch, n - start);
    BatchNoise streams(seed, start, m);
    Tensor z = noise.defined() ? rows_of(noise, start, m) : streams.draw(Shape{m, latent_shape[1], size, size});
    Conditioning c{rows_of(cond, start, m), uncond.defined() && uncond.size(0) == n ? rows_of(uncond, start, m) : uncond,
                   guidance};
    Tensor out = run_sampler(o.sampler, schedule, unet_denoiser(*unet, c), z, steps, streams);
    std::copy(out.data(), out.data() + out.numel(), latents.data() + start * (out.numel() / m));
    std::cerr << "lcm-sample: " << std::min<int64_t>(start + m, n) << "/" << n << " samples, " << o.sampler << " "
              << steps << " steps, " << std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count()
              << " s\n";
  }
  if (!o.latents_out.empty()) write_safetensors(o.latents_out, {{"latents", latents, DType::kF32}});
  if (o.out.empty() && o.out_dir.empty()) return 0;

  const std::string vae_dir = o.vae.empty() ? (fs::path(o.model) / "vae").string() : o.vae;
  auto vae = load_autoencoder(vae_dir);
  std::vector<Tensor> decoded;
  {
    NoGradGuard g;
    for (int64_t start = 0; start < n; start += batch) {
      const int64_t m = std::min<int64_t>(batch, n - start);
      decoded.push_back(vae->decode(scale(rows_of(latents, start, m), 1.0 / vae->config.scaling_factor)));
    }
  }
  Tensor images = concat(decoded, 0);
  if (!o.out.empty()) {
    // With labels: one row per label (per_label columns), or all labels in one row of up to 10 when per_label is 1.
    const int columns = o.labels.empty() ? static_cast<int>(std::ceil(std::sqrt(double(n))))
                        : per_label > 1 ? per_label
                                        : static_cast<int>(std::min<int64_t>(n, 10));
    write_png(o.out, image_grid(images, columns));
  }
  if (!o.out_dir.empty()) {
    fs::create_directories(o.out_dir);
    for (int64_t i = 0; i < n; ++i)
      write_png((fs::path(o.out_dir) / (names[i] + "_" + std::to_string(i) + ".png")).string(), image_at(images, i));
  }
  return 0;
}

}  // namespace lcd
