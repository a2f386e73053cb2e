// lcm-sample (see lcm_sample.h).
#include "infer/tools/lcm_sample.h"

#include <cctype>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

#include <sys/resource.h>
#include <unistd.h>

#include "autograd/errors.h"
#include "autograd/storage.h"
#include "autograd/finite.h"
#include "autograd/threads.h"
#include "datasets/png.h"
#include "infer/io/lora_io.h"
#include "infer/io/model_io.h"
#include "infer/nn/config_check.h"
#include "infer/samplers.h"
#include "infer/tools/cli.h"
#include "infer/tools/no_overwrite.h"
#include "infer/tools/version.h"
#include <nlohmann/json.hpp>

namespace lcd {

namespace fs = std::filesystem;

namespace {

struct Options {
  std::string model, unet, vae, sampler = "lcm", steps, guidance, eta = "0.3", labels, per_label = "1", cond, noise, seed = "0",
                                     num, batch = "64", latents_out, out, out_dir, threads, precision;
  std::vector<std::string> loras;
};

// A class name as typed: case and '_' for ' ' do not matter ("ankle_boot" is "Ankle boot").
std::string name_key(std::string s) {
  for (char& ch : s) ch = ch == '_' ? ' ' : static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  return s;
}

// "all", or a comma-separated list of row numbers or class names (labels.json).
std::vector<int64_t> parse_labels(const std::string& text, int64_t classes, const std::vector<std::string>& names) {
  std::vector<int64_t> labels;
  if (text == "all") {
    for (int64_t k = 0; k < classes; ++k) labels.push_back(k);
    return labels;
  }
  std::stringstream in(text);
  for (std::string item; std::getline(in, item, ',');) {
    if (!item.empty() && !std::isdigit(static_cast<unsigned char>(item[0])) && item[0] != '-') {
      int64_t found = -1;
      for (size_t k = 0; k < names.size(); ++k)
        if (name_key(names[k]) == name_key(item)) found = static_cast<int64_t>(k);
      if (found < 0) {
        std::string known;
        for (const auto& n : names) known += (known.empty() ? "" : ", ") + n;
        throw UsageError("--labels: \"" + item + "\" is not a class name of this model" +
                         (names.empty() ? std::string(" (it has no labels.json: give row numbers)") : " (" + known + ")"));
      }
      labels.push_back(found);
      continue;
    }
    const int v = parse_int("--labels", item);
    if (v < 0 || v >= classes)
      throw UsageError("--labels: " + std::to_string(v) + " is not a class of this model (0.." + std::to_string(classes - 1) + ")");
    labels.push_back(v);
  }
  if (labels.empty()) throw UsageError("--labels is empty");
  return labels;
}

Tensor rows_of(const Tensor& x, int64_t start, int64_t count) { return slice(x, 0, start, count); }

// The numbers of the command line, parsed and range-checked once.
struct Settings {
  const SamplerSpec* sampler;
  int steps, batch, per_label;
  double guidance, eta;
  uint64_t seed;
};

Settings parse_settings(const Options& o) {
  if (o.model.empty() && o.unet.empty()) throw UsageError("give --model DIR (or --unet DIR)");
  if (o.out.empty() && o.out_dir.empty() && o.latents_out.empty())
    throw UsageError("nothing to write: give --out, --out-dir or --latents-out");
  if (o.labels.empty() == o.cond.empty()) throw UsageError("give exactly one of --labels and --cond");
  Settings s;
  try {
    s.sampler = &find_sampler(o.sampler);
  } catch (const ValueError&) {
    throw UsageError("--sampler must be " + sampler_names() + ", got \"" + o.sampler + "\"");
  }
  s.steps = o.steps.empty() ? s.sampler->default_steps : parse_int("--steps", o.steps, 1, 1000);
  s.guidance = o.guidance.empty() ? s.sampler->default_guidance : parse_double("--guidance", o.guidance);
  s.eta = parse_double("--eta", o.eta);
  if (!(s.eta >= 0 && s.eta <= 1)) throw UsageError("--eta must be in [0, 1], got " + o.eta);
  s.batch = parse_int("--batch", o.batch, 1, 1 << 16);
  s.per_label = parse_int("--per-label", o.per_label, 1, 1 << 20);
  s.seed = parse_seed("--seed", o.seed);
  return s;
}

// A PCM adapter is sampled with one step per phase: the count lcd-train records (lcdkit.pcm_phases) is the
// default of --steps for the pcm sampler; every other sampler keeps `steps`.
int default_steps_for(const SamplerSpec& sampler, const LoraAdapter& adapter, const std::string& origin, int steps) {
  const auto phases = adapter.metadata.find("lcdkit.pcm_phases");
  if (std::string(sampler.name) != "pcm" || phases == adapter.metadata.end()) return steps;
  try {
    return parse_int("lcdkit.pcm_phases", phases->second, 1, 1000);
  } catch (const UsageError& e) {
    throw FormatError(origin + ": metadata " + e.what());
  }
}

// Every output is checked against every input before anything is read or written.
void refuse_outputs_over_inputs(const Options& o) {
  std::vector<NamedPath> inputs = {{"--model", o.model}, {"--unet", o.unet}, {"--vae", o.vae}, {"--cond", o.cond},
                                   {"--noise", o.noise}};
  for (const auto& spec : o.loras) inputs.push_back({"--lora", parse_weighted_path("--lora", spec).first});
  for (const NamedPath& out : {NamedPath{"--out", o.out}, NamedPath{"--latents-out", o.latents_out}, NamedPath{"--out-dir", o.out_dir}})
    refuse_overwriting_inputs(out, inputs);
  if (!o.out.empty() && !o.latents_out.empty() && path_within(o.out, o.latents_out) && path_within(o.latents_out, o.out))
    throw UsageError("--out and --latents-out name the same file " + o.out);
}

// The conditions of every sample (cond, uncond), a name per sample for --out-dir, and what each sample was
// asked for (the "prompt" of its PNG text: a class name and label, or a row of the --cond file).
struct Conditions {
  Tensor cond, uncond;  // (n, L, D), (1 or n, L, D) or undefined
  std::vector<std::string> names;
  std::vector<std::string> prompts;
  std::vector<int64_t> labels;  // −1 for --cond rows
};

Conditions load_conditions(const Options& o, const Settings& s, const UNetConfig& unet) {
  Conditions c;
  if (!o.labels.empty()) {
    if (o.model.empty()) throw UsageError("--labels needs --model (its cond_embeddings table)");
    Tensor table = load_cond_embeddings(o.model, unet.cross_attention_dim);  // (classes + 1, L, D)
    const std::vector<std::string> class_names = load_class_names(o.model, table.size(0) - 1);
    std::vector<int64_t> rows;
    for (int64_t label : parse_labels(o.labels, table.size(0) - 1, class_names))
      for (int k = 0; k < s.per_label; ++k) {
        rows.push_back(label);
        c.names.push_back(std::to_string(label));
        c.labels.push_back(label);
        c.prompts.push_back(class_names.empty() ? "label " + std::to_string(label)
                                                : class_names[label] + " (label " + std::to_string(label) + ")");
      }
    NoGradGuard g;
    c.cond = embedding(table, rows);
    c.uncond = embedding(table, {table.size(0) - 1});
  } else {
    SafetensorsFile f = SafetensorsFile::read(o.cond);
    if (!f.contains("cond")) throw FormatError(o.cond + ": no tensor \"cond\" (the conditions, (B, L, D))");
    c.cond = f.tensor("cond");
    if (f.contains("uncond")) c.uncond = f.tensor("uncond");
    else if (!o.model.empty() && fs::exists(fs::path(o.model) / "cond_embeddings.safetensors")) {
      Tensor table = load_cond_embeddings(o.model, unet.cross_attention_dim);
      c.uncond = slice(table, 0, table.size(0) - 1, 1);
    }
    const Shape& cs = c.cond.shape();
    if (cs.rank() != 3 || cs[0] < 1 || cs[1] < 1 || cs[2] != unet.cross_attention_dim)
      throw ShapeError(o.cond + ": cond " + cs.str() + " is not (B, L, " + std::to_string(unet.cross_attention_dim) +
                       ") with B, L ≥ 1");
    if (c.uncond.defined()) {
      const Shape& us = c.uncond.shape();
      if (us.rank() != 3 || (us[0] != 1 && us[0] != cs[0]) || us[1] != cs[1] || us[2] != cs[2])
        throw ShapeError(o.cond + ": uncond " + us.str() + " does not fit cond " + cs.str() + " (need (1 or B, L, D))");
    }
    require_finite(c.cond, o.cond + ": cond");
    if (f.contains("uncond")) require_finite(c.uncond, o.cond + ": uncond");
    c.names.assign(cs[0], "cond");
    c.labels.assign(cs[0], -1);
    for (int64_t i = 0; i < cs[0]; ++i) c.prompts.push_back("row " + std::to_string(i) + " of " + fs::path(o.cond).filename().string());
  }
  if (s.guidance != 1.0 && !c.uncond.defined() && unet.time_cond_proj_dim == 0)
    throw UsageError("--guidance " + o.guidance + " needs an unconditional embedding (uncond in --cond, or --model)");
  if (!o.num.empty() && parse_int("--num", o.num, 1) != c.cond.size(0))
    throw UsageError("--num " + o.num + " does not match the " + std::to_string(c.cond.size(0)) + " conditions");
  return c;
}

// The initial latents from --noise, checked against the model (undefined: drawn from --seed).
Tensor load_noise(const std::string& path, int64_t n, const UNetConfig& unet) {
  if (path.empty()) return Tensor();
  SafetensorsFile f = SafetensorsFile::read(path);
  if (!f.contains("noise")) throw FormatError(path + ": no tensor \"noise\" (the initial latents, (B, C, H, W))");
  Tensor noise = f.tensor("noise");
  const Shape& s = noise.shape();
  const int64_t factor = int64_t{1} << (unet.block_out_channels.size() - 1);
  if (s.rank() != 4 || s[0] != n || s[1] != unet.in_channels || s[2] < 1 || s[3] < 1 || s[2] % factor || s[3] % factor)
    throw ShapeError(path + ": noise " + s.str() + " does not fit " + std::to_string(n) + " samples of " +
                     std::to_string(unet.in_channels) + " channels (height and width multiples of " + std::to_string(factor) + ")");
  require_finite(noise, path + ": noise");
  return noise;
}

// lcm-sample runs a few large forwards, not a step loop: its storage cache holds little (SD1.5 bf16: peak
// 2.85 → 2.34 GB with this limit).
constexpr size_t kSamplingCacheBytes = size_t(256) << 20;

// The decode may keep its freed blocks for reuse instead of faulting in fresh pages for every 512² activation
// (SD1.5 fp32 on the Xeon with AMX: decode 6.3 s with the 256 MB cache, 5.8 s with 3 GB), in the memory the
// UNet has freed, less what the decode itself holds: its blocks in use and cached together stay within what
// keeps the process at the peak it has reached so far. The decode's own memory is estimated as eight
// full-resolution activations at the first block's channels: SD1.5's 512² decode held 1.0 GB beyond the
// resident memory at its start (8 × 134 MB). In bf16 that leaves no room (its peak is the decode's already).
void keep_decode_within_peak(int64_t images, int64_t image_pixels, int64_t channels) {
  rusage usage{};
  long pages = 0, resident_pages = 0;
  std::ifstream statm("/proc/self/statm");
  if (getrusage(RUSAGE_SELF, &usage) != 0 || !(statm >> pages >> resident_pages)) return;  // keep kSamplingCacheBytes
  const double peak = static_cast<double>(usage.ru_maxrss) * 1024.0;  // Linux: KiB
  const double resident = static_cast<double>(resident_pages) * static_cast<double>(sysconf(_SC_PAGESIZE));
  const double decode = 8.0 * static_cast<double>(images * image_pixels * channels) * sizeof(float);
  const double room = peak - resident - decode + static_cast<double>(storage_in_use_bytes());
  if (room <= static_cast<double>(kSamplingCacheBytes)) return;
  limit_storage_footprint(static_cast<size_t>(room));
  limit_cached_storage(static_cast<size_t>(room));
}

// Refuses a request that cannot fit in memory before any work (latents, images and the decoder's activations).
void check_memory(int64_t n, const Shape& latent, int64_t image_pixels) {
  const double per_sample = 4.0 * (latent.numel() / latent[0] + 2.0 * image_pixels);
  const double need = per_sample * static_cast<double>(n);
  const double have = static_cast<double>(sysconf(_SC_PHYS_PAGES)) * static_cast<double>(sysconf(_SC_PAGESIZE));
  if (have > 0 && need > have)
    throw UsageError(std::to_string(n) + " samples need about " + std::to_string(static_cast<int64_t>(need / (1 << 30))) +
                     " GiB for their latents and images, more than this machine's " +
                     std::to_string(static_cast<int64_t>(have / (1 << 30))) + " GiB (ask for fewer samples)");
}

// "NAME: what it is" for every row of the sampler table.
std::string sampler_help() {
  std::string out;
  for (const SamplerSpec& spec : sampler_table()) out += std::string(out.empty() ? "" : "; ") + spec.name + ": " + spec.doc;
  return out;
}

// What made an image, as PNG text chunks: A1111's `parameters` (prompt line, then "Steps: …, Sampler: …") that
// image browsers show, and the same as JSON under `lcdkit`. `indices`: the samples the image shows (one, or a
// grid's); (seed, sample index) reproduces a sample's noise.
std::vector<std::pair<std::string, std::string>> png_text(const Options& o, const Settings& s, const Conditions& c,
                                                          const std::vector<int64_t>& indices, const Tensor& images) {
  const std::string model = !o.model.empty() ? fs::path(o.model).lexically_normal().string() : o.unet;
  std::string prompt, loras;
  nlohmann::json j = {{"tool", "lcm-sample"}, {"version", version_line("lcdkit")}, {"model", model},
                      {"sampler", o.sampler}, {"steps", s.steps}, {"guidance", s.guidance}, {"seed", s.seed},
                      {"precision", o.precision.empty() ? "auto" : o.precision}};
  if (std::string(s.sampler->name) == "tcd") j["eta"] = s.eta;
  if (!o.noise.empty()) j["noise"] = o.noise;
  for (const auto& spec : o.loras) {
    const auto [path, weight] = parse_weighted_path("--lora", spec);
    j["loras"].push_back({{"file", path}, {"weight", weight}});
    loras += (loras.empty() ? "" : " ") + fs::path(path).filename().string() + ":" + nlohmann::json(weight).dump();
  }
  std::string last;
  for (int64_t i : indices) {
    j["samples"].push_back({{"index", i}, {"prompt", c.prompts[i]}, {"label", c.labels[i]}});
    if (c.prompts[i] != last) prompt += (prompt.empty() ? "" : "; ") + c.prompts[i];
    last = c.prompts[i];
  }
  std::string params = prompt + "\nSteps: " + std::to_string(s.steps) + ", Sampler: " + o.sampler +
                       ", CFG scale: " + nlohmann::json(s.guidance).dump() + ", Seed: " + std::to_string(s.seed) +
                       (indices.size() == 1 ? ", Sample index: " + std::to_string(indices[0]) : "") + ", Size: " +
                       std::to_string(images.size(3)) + "x" + std::to_string(images.size(2)) + ", Model: " +
                       fs::path(model).filename().string() + (loras.empty() ? "" : ", Lora: " + loras) +
                       ", Version: " + version_line("lcdkit");
  return {{"parameters", params}, {"lcdkit", j.dump()}};
}

}  // namespace

int lcm_sample_command(int argc, char** argv) {
  Options o;
  ArgParser p("lcm-sample", "--model DIR (--labels L | --cond FILE) [options]",
              "Samples latents with LCM, TCD or PCM (1-8 steps, for a model with a distilled adapter) or with the\n"
              "teacher's DDIM or DPM-Solver++(2M) with classifier-free guidance, then decodes them to PNG.");
  p.option("--model", "DIR", "model directory (unet/, vae/, scheduler/, cond_embeddings.safetensors)", &o.model);
  p.option("--unet", "DIR", "UNet directory (instead of DIR/unet)", &o.unet);
  p.option("--vae", "DIR", "autoencoder directory (instead of DIR/vae)", &o.vae);
  p.repeated("--lora", "FILE[:WEIGHT]", "LoRA adapter (PEFT or kohya keys), merged with WEIGHT (default 1); repeatable", &o.loras);
  p.option("--sampler", "NAME", sampler_help(), &o.sampler);
  p.option("--steps", "N", "sampling steps (default: 4 for lcm and tcd; for pcm the adapter's phases, else 4; 50 for "
           "ddim, 20 for dpmpp-2m)", &o.steps);
  p.option("--guidance", "S", "guidance scale s, ε = ε_u + s(ε_c − ε_u); 1 = off (default: 1 for lcm, tcd and pcm, 2 otherwise)",
           &o.guidance);
  p.option("--eta", "γ", "TCD's stochasticity γ in [0, 1] (0: deterministic; default 0.3)", &o.eta);
  p.option("--labels", "L", "comma-separated class labels: rows of the model's condition table or their names (its labels.json, e.g. Dress,ankle_boot), or all", &o.labels);
  p.option("--per-label", "N", "samples per label", &o.per_label);
  p.option("--cond", "FILE", "safetensors with cond (B,L,D) and optionally uncond (B or 1,L,D)", &o.cond);
  p.option("--noise", "FILE", "safetensors with the initial latents noise (B,C,H,W)", &o.noise);
  p.option("--seed", "N", "seed of the initial latents and of LCM's per-step noise", &o.seed);
  p.option("--num", "B", "number of samples (must match the conditions)", &o.num);
  p.option("--batch", "N", "samples per forward pass", &o.batch);
  p.option("--latents-out", "FILE", "write the final latents (tensor latents) before decoding", &o.latents_out);
  p.option("--out", "GRID.png", "write a grid of all samples", &o.out);
  p.option("--out-dir", "DIR", "write one PNG per sample, named <label>_<index>.png", &o.out_dir);
  p.threads(&o.threads);
  p.option("--precision", "P", kPrecisionHelp, &o.precision);
  if (!p.parse(argc, argv)) return 0;

  // 1. Settings and paths, all checked before anything is loaded.
  apply_threads(o.threads);
  limit_cached_storage(kSamplingCacheBytes);
  Settings set = parse_settings(o);
  apply_precision(o.precision, "lcm-sample", "--precision");
  refuse_outputs_over_inputs(o);

  // 2. Every input: the UNet with its adapters merged, the schedule, the conditions, the noise and (when PNGs
  //    are asked for) the autoencoder, so that a bad input fails before any output exists.
  const std::string unet_dir = o.unet.empty() ? (fs::path(o.model) / "unet").string() : o.unet;
  std::vector<LoraAdapter> adapters;
  std::vector<FoldedAdapter> folds;
  adapters.reserve(o.loras.size());
  for (const auto& spec : o.loras) {
    auto [path, weight] = parse_weighted_path("--lora", spec);
    adapters.push_back(read_lora(path));
    if (const std::string note = text_encoder_note(path, adapters.back()); !note.empty())
      std::fprintf(stderr, "lcm-sample: %s\n", note.c_str());
    if (o.steps.empty()) set.steps = default_steps_for(*set.sampler, adapters.back(), path, set.steps);
    folds.push_back({&adapters.back(), weight, path});
  }
  // The UNet runs forwards only, at one precision: its weights are read one at a time, the adapters folded in,
  // and kept only in the kernels' forms (half the memory in bf16; large weights not packed again per call).
  auto unet = load_unet_for_inference(unet_dir, folds);
  folds.clear();
  adapters.clear();
  release_cached_storage();
  NoiseSchedule schedule = NoiseSchedule::scaled_linear();
  if (!o.model.empty() && fs::exists(fs::path(o.model) / "scheduler/scheduler_config.json")) {
    const std::string path = (fs::path(o.model) / "scheduler/scheduler_config.json").string();
    schedule = NoiseSchedule::from_config(read_json_file(path), path);
  }
  const Conditions c = load_conditions(o, set, unet->config);
  const int64_t n = c.cond.size(0);
  const Tensor noise = load_noise(o.noise, n, unet->config);
  const int64_t size = unet->config.sample_size;
  const Shape latent_shape = noise.defined() ? noise.shape() : Shape{n, unet->config.in_channels, size, size};
  const bool decode = !o.out.empty() || !o.out_dir.empty();
  std::unique_ptr<AutoencoderKL> vae;
  if (decode) {
    vae = load_autoencoder_for_inference(o.vae.empty() ? (fs::path(o.model) / "vae").string() : o.vae);
    if (vae->config.latent_channels != unet->config.out_channels)
      throw ShapeError("the autoencoder takes " + std::to_string(vae->config.latent_channels) + " latent channels but the UNet makes " +
                       std::to_string(unet->config.out_channels));
  }
  const int64_t factor = vae ? int64_t{1} << (vae->config.block_out_channels.size() - 1) : 1;
  check_memory(n, latent_shape, vae ? vae->config.out_channels * latent_shape[2] * latent_shape[3] * factor * factor : 0);

  // 3. Sampling, batch by batch.
  Tensor latents = Tensor::empty(latent_shape);  // (n, C, H, W)
  const auto t0 = std::chrono::steady_clock::now();
  for (int64_t start = 0; start < n; start += set.batch) {
    const int64_t m = std::min<int64_t>(set.batch, n - start);
    BatchNoise streams(set.seed, start, m);
    Tensor z = noise.defined() ? rows_of(noise, start, m) : streams.draw(Shape{m, latent_shape[1], latent_shape[2], latent_shape[3]});
    Conditioning cb{rows_of(c.cond, start, m),
                    c.uncond.defined() && c.uncond.size(0) == n ? rows_of(c.uncond, start, m) : c.uncond, set.guidance};
    Tensor out = set.sampler->run(schedule, unet_denoiser(*unet, cb), z, {set.steps, set.eta, &streams});
    std::copy(out.data(), out.data() + out.numel(), latents.data() + start * (out.numel() / m));
    std::cerr << "lcm-sample: " << std::min<int64_t>(start + m, n) << "/" << n << " samples, " << o.sampler << " "
              << set.steps << " steps, " << std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count()
              << " s\n";
  }
  if (first_nonfinite(latents) >= 0)
    throw ValueError("sampling produced NaN or infinite latents (the model or an adapter diverges at these settings)");
  unet.reset();  // its weights (3.4 GB for SD1.5 in float32) are not needed while decoding
  release_cached_storage();
  if (vae)
    keep_decode_within_peak(std::min<int64_t>(set.batch, n), latent_shape[2] * latent_shape[3] * factor * factor,
                            vae->config.block_out_channels.front());

  // 4. Decoding, then every output, each written atomically.
  Tensor images;  // (n, C, H·f, W·f)
  if (decode) {
    NoGradGuard g;
    std::vector<Tensor> decoded;
    for (int64_t start = 0; start < n; start += set.batch) {
      const int64_t m = std::min<int64_t>(set.batch, n - start);
      decoded.push_back(vae->decode(scale(rows_of(latents, start, m), 1.0 / vae->config.scaling_factor)));
    }
    images = concat(decoded, 0);
    std::cerr << "lcm-sample: decoded " << n << " image(s), "
              << std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count()
              << " s since sampling began\n";
  }
  if (!o.latents_out.empty()) write_safetensors(o.latents_out, {{"latents", latents, DType::kF32}});
  if (!o.out.empty()) {
    // With labels: one row per label (per_label columns), or all labels in one row of up to 10 when per_label is 1.
    const int columns = o.labels.empty() ? static_cast<int>(std::ceil(std::sqrt(double(n))))
                        : set.per_label > 1 ? set.per_label
                                            : static_cast<int>(std::min<int64_t>(n, 10));
    Image8 grid = image_grid(images, columns);
    std::vector<int64_t> all(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) all[i] = i;
    grid.text = png_text(o, set, c, all, images);
    write_png(o.out, grid);
  }
  if (!o.out_dir.empty()) {
    fs::create_directories(o.out_dir);
    for (int64_t i = 0; i < n; ++i) {
      Image8 one = image_at(images, i);
      one.text = png_text(o, set, c, {i}, images);
      write_png((fs::path(o.out_dir) / (c.names[i] + "_" + std::to_string(i) + ".png")).string(), one);
    }
  }
  return 0;
}

}  // namespace lcd
