// bench/quality: the LCM paper's table at small scale. Samples a model (+ adapters) with each requested sampler
// and step count, N samples per class, decodes them, and reports the FID of the classifier's penultimate
// features against the 10,000 Fashion-MNIST test images, the class accuracy of the samples, and the time.
// Usage: quality --model DIR [--lora FILE[:W]]... [--eval SPEC,...] [--per-label N] [--guidance S] [--threads N]
//   SPEC = sampler:steps[:guidance[:eta]], e.g. ddim:50:3,dpmpp-2m:4:3,lcm:4,tcd:4:1:0.3 (the samplers for
//   distilled adapters, lcm, tcd and pcm, default to guidance 1; eta is TCD's γ, default 0.3).
//   Default: teacher DDIM and DPM-Solver++(2M) at 1, 2, 4, 8, 50 steps with CFG, and, when --lora is given,
//   LCM at 1, 2, 4, 8 steps. --lora adapters go into the lcm/tcd/pcm rows' UNet, --teacher-lora ones into the other
//   rows' (a style adapter sampled with DDIM); --unet replaces the model's UNet (a `lora-merge fold` output).
//   --style invert measures against the restyled test set and adds the style score (bench/metrics/style_metric.h).
//   SPEC vae:0 is the autoencoder's ceiling: N test images per class (restyled), encoded and decoded, no sampling.
#include <chrono>
#include <cstdio>
#include <sstream>

#include "autograd/errors.h"
#include "autograd/threads.h"
#include "bench/metrics/classifier.h"
#include "bench/metrics/fid.h"
#include "bench/metrics/style_metric.h"
#include "datasets/png.h"
#include "datasets/style.h"
#include "datasets/fashion_mnist.h"
#include "infer/io/lora_io.h"
#include "infer/io/model_io.h"
#include "infer/nn/config_check.h"
#include "infer/samplers.h"
#include "infer/tools/cli.h"

using namespace lcd;
namespace fs = std::filesystem;

namespace {

struct Eval {
  std::string sampler;
  int steps;
  double guidance;  // < 0: the teacher rows' --guidance
  double eta = 0.3;

  // <sampler>-<steps>.png, with the guidance and γ when they are not the sampler's defaults.
  std::string grid_name() const {
    std::string name = sampler + "-" + std::to_string(steps);
    char extra[64];
    if (sampler != "vae" && guidance != find_sampler(sampler).default_guidance) {
      std::snprintf(extra, sizeof extra, "-s%g", guidance);
      name += extra;
    }
    if (sampler == "tcd") {
      std::snprintf(extra, sizeof extra, "-eta%g", eta);
      name += extra;
    }
    return name + ".png";
  }
};

std::vector<Eval> parse_evals(const std::string& text) {
  std::vector<Eval> out;
  std::stringstream in(text);
  for (std::string item; std::getline(in, item, ',');) {
    std::stringstream parts(item);
    std::string sampler, steps, guidance, eta;
    std::getline(parts, sampler, ':');
    std::getline(parts, steps, ':');
    std::getline(parts, guidance, ':');
    std::getline(parts, eta, ':');
    if (sampler.empty() || steps.empty()) throw UsageError("--eval: \"" + item + "\" is not sampler:steps[:guidance[:eta]]");
    const bool distilled = sampler != "vae" && find_sampler(sampler).for_distilled;
    Eval e{sampler, parse_int("--eval", steps), guidance.empty() ? (distilled ? 1.0 : -1.0) : parse_double("--eval", guidance)};
    if (!eta.empty()) e.eta = parse_double("--eval", eta);
    out.push_back(e);
  }
  return out;
}

// The autoencoder's ceiling (SPEC vae:0): the first `per` test images of each class, encoded (posterior
// mean) and decoded, in class order like the sampled rows.
Tensor reconstructions(const AutoencoderKL& vae, const Tensor& images, const std::vector<int64_t>& labels,
                       int64_t per, int64_t batch) {
  std::vector<Tensor> originals;
  for (int64_t k = 0; k < 10; ++k) {
    int64_t taken = 0;
    for (int64_t i = 0; i < images.size(0) && taken < per; ++i)
      if (labels[i] == k) {
        originals.push_back(slice(images, 0, i, 1));
        ++taken;
      }
    if (taken < per)
      throw UsageError("--per-label " + std::to_string(per) + ": the test set has fewer images of class " +
                       std::to_string(k));
  }
  const Tensor all = concat(originals, 0);
  std::vector<Tensor> decoded;
  for (int64_t start = 0; start < all.size(0); start += batch)
    decoded.push_back(vae.decode(vae.encode(slice(all, 0, start, std::min(batch, all.size(0) - start))).mean));
  return concat(decoded, 0);
}

}  // namespace

int main(int argc, char** argv) {
  return run_tool("quality", [&] {
    std::string model, evals, per_class = "100", guidance = "3", threads, seed = "0", batch = "128", classifier, precision,
                                 data = kDefaultFashionMnistDir, unet_dir, style, grid_dir, grid_per_class = "8";
    std::vector<std::string> loras, teacher_loras;
    ArgParser p("quality", "--model DIR [--lora FILE[:W]]... [options]",
                "FID (classifier features vs the Fashion-MNIST test set) and class accuracy per sampler and step count.");
    p.option("--model", "DIR", "model directory", &model);
    p.repeated("--lora", "FILE[:W]", "adapter merged into the UNet for the lcm, tcd and pcm rows (repeatable)", &loras);
    p.repeated("--teacher-lora", "FILE[:W]", "adapter merged into the UNet for the ddim/dpmpp-2m rows (repeatable)",
               &teacher_loras);
    p.option("--unet", "DIR", "UNet directory instead of the model's unet/ (e.g. from lora-merge fold)", &unet_dir);
    p.option("--style", "NAME", "compare with the restyled test set (invert) and report the style score", &style);
    p.option("--grid-dir", "DIR", "write <sampler>-<steps>.png per row: the first samples of each class", &grid_dir);
    p.option("--grid-per-label", "N", "columns of those grids (default 8)", &grid_per_class);
    p.option("--eval", "SPEC,...", "rows as sampler:steps[:guidance[:eta]] (default: the full table)", &evals);
    p.option("--per-label", "N", "samples per class label (as lcm-sample's --per-label)", &per_class);
    p.option("--guidance", "S", "guidance of the teacher rows", &guidance);
    p.threads(&threads);
    p.option("--precision", "P", kPrecisionHelp, &precision);
    p.option("--seed", "N", "seed of the samples' noise", &seed);
    p.option("--batch", "N", "samples per forward pass", &batch);
    p.option("--classifier", "FILE", "classifier weights (default: bench/classifier/fmnist_classifier.safetensors)", &classifier);
    p.option("--data", "DIR", "Fashion-MNIST idx folder (test split)", &data);
    if (!p.parse(argc, argv)) return 0;
    if (model.empty()) throw UsageError("give --model DIR");
    check_style_has_metric(style);
    apply_threads(threads);
    std::printf("precision: %s\n", apply_precision(precision, "quality", "--precision"));
    const double teacher_guidance = parse_double("--guidance", guidance);
    std::vector<Eval> rows;
    if (evals.empty()) {
      for (const char* s : {"ddim", "dpmpp-2m"})
        for (int n : {1, 2, 4, 8, 50}) rows.push_back({s, n, teacher_guidance});
      if (!loras.empty())
        for (int n : {1, 2, 4, 8}) rows.push_back({"lcm", n, 1.0});
    } else {
      rows = parse_evals(evals);
      for (auto& r : rows)
        if (r.guidance < 0) r.guidance = teacher_guidance;
    }

    FmnistClassifier net;
    load_classifier(net, classifier.empty() ? default_classifier_path() : classifier);
    Tensor test_features;
    const LabeledImages test_set = load_fashion_mnist(data, Split::kTest);
    const Tensor& test_images = test_set.images;
    const Tensor styled_test = apply_style(test_images, style);
    classify(net, undo_style(styled_test, style), &test_features);
    const FeatureStats reference = feature_stats(test_features);
    if (!style.empty())
      std::printf("style score on real test images: plain %.2f%%, styled (%s) %.2f%%\n", 100 * style_score(test_images),
                  style.c_str(), 100 * style_score(styled_test));

    const std::string unet_path = unet_dir.empty() ? (fs::path(model) / "unet").string() : unet_dir;
    auto teacher = load_unet(unet_path);
    auto student = load_unet(unet_path);
    auto merge_all = [](UNet2DConditionModel& unet, const std::vector<std::string>& specs, const char* flag) {
      for (const auto& spec : specs) {
        auto [path, w] = parse_weighted_path(flag, spec);
        const LoraAdapter a = read_lora(path);
        prepare_unet_for(unet, a);
        merge_lora(unet, a, w);
      }
    };
    merge_all(*student, loras, "--lora");
    merge_all(*teacher, teacher_loras, "--teacher-lora");
    const int64_t grid_columns = parse_int("--grid-per-label", grid_per_class);
    if (!grid_dir.empty()) fs::create_directories(grid_dir);
    auto vae = load_autoencoder((fs::path(model) / "vae").string());
    const std::string sched = (fs::path(model) / "scheduler/scheduler_config.json").string();
    const NoiseSchedule schedule = fs::exists(sched) ? NoiseSchedule::from_config(read_json_file(sched), sched) : NoiseSchedule::scaled_linear();
    Tensor table = load_cond_embeddings(model);
    const int64_t per = parse_int("--per-label", per_class, 1, 100000), n = 10 * per, b = parse_int("--batch", batch);
    const uint64_t noise_seed = static_cast<uint64_t>(parse_int("--seed", seed));
    std::vector<int64_t> labels;
    for (int64_t k = 0; k < 10; ++k)
      for (int64_t i = 0; i < per; ++i) labels.push_back(k);

    std::printf("%-10s %6s %9s %9s %10s%s %10s   (%lld samples, %lld per class)\n", "sampler", "steps", "guidance",
                "FID", "class acc", style.empty() ? "" : "      style", "seconds", static_cast<long long>(n),
                static_cast<long long>(per));
    for (const Eval& e : rows) {
      const bool distilled = e.sampler != "vae" && find_sampler(e.sampler).for_distilled;
      const UNet2DConditionModel& unet = distilled ? *student : *teacher;
      const auto t0 = std::chrono::steady_clock::now();
      std::vector<Tensor> images;
      NoGradGuard g;
      if (e.sampler == "vae") images.push_back(reconstructions(*vae, styled_test, test_set.labels, per, b));
      else for (int64_t start = 0; start < n; start += b) {
        const int64_t m = std::min(b, n - start);
        std::vector<int64_t> rows_m(labels.begin() + start, labels.begin() + start + m);
        BatchNoise noise(noise_seed, start, m);
        const int64_t size = unet.config.sample_size;
        Tensor z = noise.draw(Shape{m, unet.config.in_channels, size, size});
        Conditioning c{embedding(table, rows_m), embedding(table, {table.size(0) - 1}), e.guidance};
        Tensor lat = find_sampler(e.sampler).run(schedule, unet_denoiser(unet, c), z, {e.steps, e.eta, &noise});
        images.push_back(vae->decode(scale(lat, 1.0 / vae->config.scaling_factor)));
      }
      const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      const Tensor all = concat(images, 0);
      Tensor features;
      const std::vector<int64_t> predicted = classify(net, undo_style(all, style), &features);
      int64_t correct = 0;
      for (int64_t i = 0; i < n; ++i) correct += predicted[i] == labels[i];
      char style_column[32] = "";
      if (!style.empty()) std::snprintf(style_column, sizeof style_column, " %9.1f%%", 100 * style_score(all));
      char label[32];
      std::snprintf(label, sizeof label, e.sampler == "tcd" ? "%s/eta%g" : "%s", e.sampler.c_str(), e.eta);
      std::printf("%-10s %6d %9.2f %9.2f %9.1f%%%s %10.1f\n", label, e.steps, e.guidance,
                  frechet_distance(feature_stats(features), reference), 100.0 * correct / n, style_column, secs);
      if (!grid_dir.empty()) {
        std::vector<Tensor> firsts;  // rows = classes, columns = the first samples of each
        for (int64_t k = 0; k < 10; ++k) firsts.push_back(slice(all, 0, k * per, std::min(grid_columns, per)));
        write_png((fs::path(grid_dir) / e.grid_name()).string(),
                  image_grid(concat(firsts, 0), static_cast<int>(std::min(grid_columns, per))));
      }
      std::fflush(stdout);
    }
    return 0;
  });
}
