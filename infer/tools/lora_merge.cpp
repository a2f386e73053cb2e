// lora-merge (see lora_merge.h).
#include "infer/tools/lora_merge.h"

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <nlohmann/json.hpp>
#include <map>
#include <optional>
#include <set>

#include "autograd/errors.h"
#include "infer/io/lora_io.h"
#include "infer/io/model_io.h"
#include "infer/lora_math.h"
#include "infer/nn/layers.h"
#include "infer/tools/cli.h"
#include "infer/tools/no_overwrite.h"
#include "infer/tools/version.h"

namespace lcd {

namespace fs = std::filesystem;

namespace {

const char* kUsage = "COMMAND ...";
const char* kDescription =
    "Exact LoRA arithmetic for lcdkit and Stable Diffusion adapter files (PEFT/diffusers or kohya keys, or\n"
    "lcdkit's HDF5 export). Computes in float64, never overwrites an input, writes through a temp file.\n\n"
    "commands:\n"
    "  combine (--out OUT | OUT) IN[:WEIGHT]... [--method cat|svd] [--rank R | --energy F]\n"
    "      Σ weight_i · ΔW_i. cat (default) is exact (rank = Σ r_i); svd truncates without forming ΔW and\n"
    "      prints the relative Frobenius error per module and overall.\n"
    "  fold --unet DIR --out DIR IN[:WEIGHT]...\n"
    "      a diffusers UNet directory with the adapters merged into its weights (θ' = θ + Σ λ_i ΔW_i).\n"
    "  extract --base DIR --tuned DIR --rank R (--out OUT | OUT)\n"
    "      the best rank-R LoRA of tuned − base for the LoRA target modules, with the error report.\n"
    "  convert IN (--out OUT | OUT) --format diffusers|peft|kohya|hdf5\n"
    "      diffusers: one file (unet. keys); peft: a folder PeftModel.from_pretrained loads.\n"
    "  inspect FILE\n"
    "      modules, ranks, alphas, dtypes, metadata and the norm of each ΔW.\n\n"
    "Every command takes --threads N (threads for OpenMP and the GEMM kernels; default: all cores, or\n"
    "OMP_NUM_THREADS), --help and --version; \"--\" ends the options. Run lora-merge COMMAND --help for a\n"
    "command's options.";

// Refuses an output that is one of the inputs (the shared check: same file after resolving links and relative
// paths, or a path inside an input folder).
void refuse_overwrite(const std::string& out, const std::vector<std::string>& inputs) {
  std::vector<NamedPath> named;
  for (const auto& in : inputs) {
    named.push_back({"input", in});
    std::error_code ec;
    if (!fs::is_directory(in, ec))  // a file's adapter_config.json is read too (a folder is covered whole)
      named.push_back({"input's adapter_config.json", (fs::path(in).parent_path() / "adapter_config.json").string()});
  }
  refuse_overwriting_inputs({"output", out}, named);
  if (fs::path(out).extension().empty())  // a PEFT folder: the two files written into it
    for (const char* file : {"adapter_model.safetensors", "adapter_config.json"})
      refuse_overwriting_inputs({"output", (fs::path(out) / file).string()}, named);
}

std::optional<DType> parse_dtype(const std::string& text) {
  if (text.empty()) return std::nullopt;
  for (DType d : {DType::kF32, DType::kF16, DType::kBF16})
    if (text == dtype_name(d) || (text == "fp32" && d == DType::kF32) || (text == "fp16" && d == DType::kF16) ||
        (text == "bf16" && d == DType::kBF16))
      return d;
  throw UsageError("--dtype must be F32, F16 or BF16, got \"" + text + "\"");
}

DType dtype_from_name(const std::string& name) {
  for (DType d : {DType::kF32, DType::kF16, DType::kBF16, DType::kF64})
    if (name == dtype_name(d)) return d == DType::kF64 ? DType::kF32 : d;
  return DType::kF32;
}

// --format: diffusers (one file, unet./text_encoder. keys), peft (a folder PeftModel.from_pretrained loads),
// kohya or hdf5.
const char* kFormats = "diffusers|peft|kohya|hdf5";

LoraFormat parse_format(const std::string& text, const std::string& out) {
  static const std::map<std::string, LoraFormat> kByName = {
      {"diffusers", LoraFormat::kDiffusers}, {"peft", LoraFormat::kPeft}, {"kohya", LoraFormat::kKohya}, {"hdf5", LoraFormat::kHdf5}};
  const auto it = kByName.find(text);
  if (it == kByName.end()) throw UsageError("--format must be diffusers, peft, kohya or hdf5, got \"" + text + "\"");
  const LoraFormat f = it->second;
  if (f == LoraFormat::kPeft && fs::path(out).extension() == ".safetensors")
    throw UsageError("--format peft writes a folder (adapter_model.safetensors + adapter_config.json), and " + out +
                     " names a file: give a folder, or use --format diffusers for one file");
  return f;
}

// The default when --format is not given: HDF5 for .h5, a PEFT folder for a path without an extension, else
// the first input's style (kohya or diffusers).
LoraFormat format_of(const std::string& out, const std::string& style) {
  const std::string ext = fs::path(out).extension().string();
  if (ext == ".h5" || ext == ".hdf5") return LoraFormat::kHdf5;
  if (ext.empty()) return LoraFormat::kPeft;
  return style == "kohya" ? LoraFormat::kKohya : LoraFormat::kDiffusers;
}

// One output convention for every command: --out PATH (fold's only form). combine, extract and convert also
// keep their positional OUT (combine's first argument, the others' last) from before --out existed.
enum class OutAt { kFirst, kLast };
std::string take_output(const std::string& flag, std::vector<std::string>* positional, OutAt at) {
  if (!flag.empty()) return flag;
  if (positional->empty()) return "";
  std::string out;
  if (at == OutAt::kFirst) {
    out = positional->front();
    positional->erase(positional->begin());
  } else {
    out = positional->back();
    positional->pop_back();
  }
  return out;
}

struct Inputs {
  std::vector<LoraAdapter> adapters;
  std::vector<WeightedAdapter> weighted;
  std::vector<std::string> paths;
  size_t skipped = 0;
};

Inputs read_inputs(const std::vector<std::string>& specs, bool allow_unmatched) {
  if (specs.empty()) throw UsageError("no input adapters");
  Inputs in;
  in.adapters.reserve(specs.size());
  for (const auto& spec : specs) {
    auto [path, weight] = parse_weighted_path("IN", spec);
    std::vector<std::string> skipped;
    in.adapters.push_back(read_lora(path, allow_unmatched, &skipped));
    in.skipped += skipped.size();
    in.paths.push_back(path);
    in.weighted.push_back({&in.adapters.back(), weight, path});
  }
  return in;
}

// Output dtype: --dtype, else the inputs' common dtype, else F32.
DType output_dtype(const std::optional<DType>& flag, const std::vector<LoraAdapter>& adapters) {
  if (flag) return *flag;
  std::set<std::string> names;
  for (const auto& a : adapters) names.insert(a.source_dtype);
  return names.size() == 1 ? dtype_from_name(*names.begin()) : DType::kF32;
}

std::map<std::string, std::string> merged_metadata(const std::vector<LoraAdapter>& adapters, const nlohmann::json& recipe) {
  std::map<std::string, std::string> m = adapters.front().metadata;
  m.erase("lora_adapter_metadata");  // rewritten by the PEFT writer for the new ranks
  m["lcdkit.merge_recipe"] = recipe.dump();
  return m;
}

void print_report(const TruncationReport& r) {
  std::printf("%-72s %8s %8s %12s %12s\n", "module", "rank in", "rank out", "|dW|_F", "rel. error");
  for (const auto& m : r.modules)
    std::printf("%-72s %8lld %8lld %12.5g %12.3e\n", m.name.c_str(), static_cast<long long>(m.rank_in),
                static_cast<long long>(m.rank_out), m.norm, m.norm > 0 ? m.error / m.norm : 0.0);
  std::printf("overall relative Frobenius error: %.6e (%zu modules)\n",
              r.total_norm() > 0 ? r.total_error() / r.total_norm() : 0.0, r.modules.size());
}

int combine(const std::vector<std::string>& args) {
  std::string method = "cat", rank, energy, dtype, format, out_flag;
  bool allow_unmatched = false;
  std::vector<std::string> positional;
  ArgParser p("lora-merge combine", "(--out OUT | OUT) IN[:WEIGHT]... [options]", "Weighted sum of LoRA adapters, Σ weight_i ΔW_i.");
  p.option("--out", "PATH", "the output (instead of a first positional OUT)", &out_flag);
  p.rest("[OUT] IN[:WEIGHT]...", "the output (unless --out), then the inputs with optional weights (default 1; negative negates)", &positional);
  p.option("--method", "cat|svd", "cat: exact, rank Σ r_i; svd: truncated to --rank or --energy", &method);
  p.option("--rank", "R", "svd: rank per module", &rank);
  p.option("--energy", "F", "svd: smallest rank keeping this fraction of Σσ² per module", &energy);
  p.option("--dtype", "F32|F16|BF16", "output dtype (default: the inputs')", &dtype);
  p.option("--format", kFormats, "output key style (default: the first input's, or hdf5 for .h5)", &format);
  p.flag("--allow-unmatched", "skip (and count) keys that are not UNet LoRA tensors", &allow_unmatched);
  std::string threads;
  p.threads(&threads);
  if (!p.parse(args)) return 0;
  apply_threads(threads);
  const std::string out = take_output(out_flag, &positional, OutAt::kFirst);
  if (out.empty() || positional.empty()) throw UsageError("combine needs OUT (or --out OUT) and at least one IN");
  std::vector<std::string> in_paths;
  for (const auto& spec : positional) in_paths.push_back(parse_weighted_path("IN", spec).first);
  refuse_overwrite(out, in_paths);
  Inputs in = read_inputs(positional, allow_unmatched);
  nlohmann::json recipe = {{"command", "combine"}, {"method", method}};
  for (const auto& w : in.weighted) recipe["inputs"].push_back({{"file", fs::path(w.origin).filename().string()}, {"weight", w.weight}});
  LoraAdapter result;
  if (method == "cat") {
    if (!rank.empty() || !energy.empty()) throw UsageError("--rank and --energy apply to --method svd");
    result = combine_cat(in.weighted);
  } else if (method == "svd") {
    if (rank.empty() == energy.empty()) throw UsageError("--method svd needs exactly one of --rank and --energy");
    TruncationReport report;
    result = combine_svd(in.weighted, rank.empty() ? 0 : parse_int("--rank", rank, 1, 1 << 20),
                         energy.empty() ? 0.0 : parse_double("--energy", energy), &report);
    print_report(report);
    recipe["rank"] = rank;
    recipe["energy"] = energy;
    recipe["relative_error"] = report.total_norm() > 0 ? report.total_error() / report.total_norm() : 0.0;
  } else {
    throw UsageError("--method must be cat or svd, got \"" + method + "\"");
  }
  result.metadata = merged_metadata(in.adapters, recipe);
  write_lora(out, result, format.empty() ? format_of(out, in.adapters.front().source_style) : parse_format(format, out),
             output_dtype(parse_dtype(dtype), in.adapters));
  if (in.skipped) std::printf("skipped %zu unmatched keys\n", in.skipped);
  std::printf("wrote %s: %zu modules\n", out.c_str(), result.modules.size());
  return 0;
}

int fold(const std::vector<std::string>& args) {
  std::string unet_dir, out_dir, dtype;
  bool allow_unmatched = false;
  std::vector<std::string> specs;
  ArgParser p("lora-merge fold", "--unet DIR --out DIR IN[:WEIGHT]...", "Merges adapters into a UNet's weights (θ' = θ + Σ λ_i ΔW_i).");
  p.option("--unet", "DIR", "input UNet directory (config.json + diffusion_pytorch_model.safetensors)", &unet_dir);
  p.option("--out", "DIR", "output UNet directory", &out_dir);
  p.option("--dtype", "F32|F16|BF16", "output weight dtype", &dtype);
  p.flag("--allow-unmatched", "skip (and count) adapter modules the UNet does not have", &allow_unmatched);
  p.rest("IN[:WEIGHT]...", "adapters with optional weights", &specs);
  std::string threads;
  p.threads(&threads);
  if (!p.parse(args)) return 0;
  apply_threads(threads);
  if (unet_dir.empty() || out_dir.empty()) throw UsageError("fold needs --unet DIR and --out DIR");
  std::vector<NamedPath> inputs = {{"--unet", unet_dir}};
  for (const auto& spec : specs) inputs.push_back({"input", parse_weighted_path("IN", spec).first});
  refuse_overwriting_inputs({"--out", out_dir}, inputs);
  for (const auto& in : inputs)
    if (in.what != "--unet" && path_within(in.path, out_dir) &&
        (fs::path(in.path).filename() == "config.json" || fs::path(in.path).filename() == "diffusion_pytorch_model.safetensors"))
      throw UsageError("--out " + out_dir + " would replace the input " + in.path + "; lcdkit never overwrites an input");
  Inputs in = read_inputs(specs, allow_unmatched);
  auto unet = load_unet(unet_dir);
  for (const auto& w : in.weighted) prepare_unet_for(*unet, *w.adapter);
  std::set<std::string> names;
  for (auto& [name, m] : unet->named_modules())
    if (m->lora_layer()) names.insert(name);
  size_t unmatched = 0;
  for (const auto& w : in.weighted) {
    LoraAdapter a = *w.adapter;
    if (const std::string note = text_encoder_note(w.origin, a); !note.empty()) std::printf("%s\n", note.c_str());
    for (auto it = a.modules.begin(); it != a.modules.end();)
      if (!is_text_encoder_module(it->first) && !names.count(it->first) && allow_unmatched) {
        ++unmatched;
        it = a.modules.erase(it);
      } else {
        ++it;
      }
    try {
      merge_lora(*unet, a, w.weight);
    } catch (const FormatError& e) {
      throw FormatError(w.origin + ": " + e.what());
    }
  }
  save_module(*unet, unet->config.raw, out_dir, parse_dtype(dtype).value_or(DType::kF32));
  if (unmatched) std::printf("skipped %zu unmatched modules\n", unmatched);
  std::printf("wrote %s with %zu adapter(s) folded in\n", out_dir.c_str(), in.weighted.size());
  return 0;
}

int extract(const std::vector<std::string>& args) {
  std::string base, tuned, rank, dtype, format, out_flag;
  std::vector<std::string> positional;
  ArgParser p("lora-merge extract", "--base DIR --tuned DIR --rank R (--out OUT | OUT)", "The best rank-R LoRA of tuned − base.");
  p.option("--out", "PATH", "the output (instead of a positional OUT)", &out_flag);
  p.option("--base", "DIR", "base UNet directory", &base);
  p.option("--tuned", "DIR", "fine-tuned UNet directory", &tuned);
  p.option("--rank", "R", "rank per module", &rank);
  p.option("--dtype", "F32|F16|BF16", "output dtype", &dtype);
  p.option("--format", kFormats, "output key style", &format);
  p.rest("OUT", "output adapter file", &positional);
  std::string threads;
  p.threads(&threads);
  if (!p.parse(args)) return 0;
  apply_threads(threads);
  const std::string out = take_output(out_flag, &positional, OutAt::kLast);
  if (base.empty() || tuned.empty() || rank.empty() || out.empty() || !positional.empty())
    throw UsageError("extract needs --base DIR --tuned DIR --rank R and one OUT (or --out OUT)");
  refuse_overwrite(out, {base, tuned});
  auto b = load_unet(base);
  auto t = load_unet(tuned);
  std::vector<std::tuple<std::string, Tensor, Tensor>> weights;
  auto tuned_modules = t->named_modules();
  std::map<std::string, Module*> by_name(tuned_modules.begin(), tuned_modules.end());
  for (auto& [name, m] : lora_target_modules(*b, default_lora_targets())) {
    weights.emplace_back(name, m->lora_layer()->weight, by_name.at(name)->lora_layer()->weight);
  }
  TruncationReport report;
  LoraAdapter a = extract_lora(weights, parse_int("--rank", rank, 1, 1 << 20), &report);
  if (a.modules.empty()) throw ValueError("the tuned UNet equals the base in every LoRA target module");
  print_report(report);
  a.metadata["lcdkit.merge_recipe"] = nlohmann::json({{"command", "extract"}, {"rank", rank}}).dump();
  write_lora(out, a, format.empty() ? format_of(out, "diffusers") : parse_format(format, out), parse_dtype(dtype).value_or(DType::kF32));
  std::printf("wrote %s: %zu modules\n", out.c_str(), a.modules.size());
  return 0;
}

int convert(const std::vector<std::string>& args) {
  std::string format, dtype, out_flag;
  bool allow_unmatched = false;
  std::vector<std::string> positional;
  ArgParser p("lora-merge convert", "IN (--out OUT | OUT) --format diffusers|peft|kohya|hdf5", "Rewrites an adapter in another key style.");
  p.rest("IN [OUT]", "input, and the output unless --out", &positional);
  p.option("--out", "PATH", "the output (instead of a second positional)", &out_flag);
  p.option("--format", kFormats, "output key style", &format);
  p.option("--dtype", "F32|F16|BF16", "output dtype (default: the input's)", &dtype);
  p.flag("--allow-unmatched", "skip (and count) keys that are not UNet LoRA tensors", &allow_unmatched);
  std::string threads;
  p.threads(&threads);
  if (!p.parse(args)) return 0;
  apply_threads(threads);
  if (!out_flag.empty()) positional.push_back(out_flag);
  if (positional.size() != 2 || format.empty())
    throw UsageError("convert needs IN, OUT (or --out OUT) and --format diffusers|peft|kohya|hdf5");
  refuse_overwrite(positional[1], {positional[0]});
  std::vector<std::string> skipped;
  LoraAdapter a = read_lora(positional[0], allow_unmatched, &skipped);
  write_lora(positional[1], a, parse_format(format, positional[1]), parse_dtype(dtype).value_or(dtype_from_name(a.source_dtype)));
  if (!skipped.empty()) std::printf("skipped %zu unmatched keys\n", skipped.size());
  std::printf("wrote %s: %zu modules\n", positional[1].c_str(), a.modules.size());
  return 0;
}

int inspect(const std::vector<std::string>& args) {
  std::vector<std::string> positional;
  bool allow_unmatched = false;
  ArgParser p("lora-merge inspect", "FILE", "Lists an adapter's modules, ranks, alphas, dtypes, metadata and ‖ΔW‖.");
  p.rest("FILE", "adapter file", &positional);
  p.flag("--allow-unmatched", "skip (and count) keys that are not UNet LoRA tensors", &allow_unmatched);
  std::string threads;
  p.threads(&threads);
  if (!p.parse(args)) return 0;
  apply_threads(threads);
  if (positional.size() != 1) throw UsageError("inspect needs one FILE");
  std::vector<std::string> skipped;
  LoraAdapter a = read_lora(positional[0], allow_unmatched, &skipped);
  std::printf("%s: %s keys, %s, %zu modules", positional[0].c_str(), a.source_style.c_str(), a.source_dtype.c_str(),
              a.modules.size());
  if (const int64_t te = a.text_encoder_modules()) std::printf(" (%lld of them text-encoder)", static_cast<long long>(te));
  std::printf("\n");
  for (const auto& [k, v] : a.metadata) std::printf("metadata %s = %s\n", k.c_str(), v.c_str());
  std::printf("%-72s %6s %8s %6s %22s %12s\n", "module", "kind", "alpha", "rank", "down shape", "|dW|_F");
  double total = 0;
  for (const auto& [name, f] : a.modules) {
    const double n = lora_delta_norm(f);
    total += n * n;
    std::printf("%-72s %6s %8.4g %6lld %22s %12.5g\n", name.c_str(), f.is_conv() ? "conv" : "linear", f.alpha,
                static_cast<long long>(f.rank()), f.down.shape().str().c_str(), n);
  }
  for (const auto& [name, t] : a.full_weights) {
    double n = 0;
    for (int64_t i = 0; i < t.numel(); ++i) n += double(t.data()[i]) * t.data()[i];
    total += n;
    std::printf("%-72s %6s %8s %6s %22s %12.5g\n", name.c_str(), "whole", "-", "-", t.shape().str().c_str(), std::sqrt(n));
  }
  std::printf("total |dW|_F = %.6g\n", std::sqrt(total));
  if (!skipped.empty()) std::printf("skipped %zu unmatched keys\n", skipped.size());
  return 0;
}

}  // namespace

int lora_merge_command(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  if (!args.empty() && args[0] == "--version") {
    std::cout << version_line("lora-merge") << "\n";
    return 0;
  }
  if (args.empty() || args[0] == "--help" || args[0] == "-h") {
    std::cout << "usage: lora-merge " << kUsage << "\n\n" << kDescription << "\n";
    return args.empty() ? 2 : 0;
  }
  const std::string command = args[0];
  args.erase(args.begin());
  if (command == "combine") return combine(args);
  if (command == "fold") return fold(args);
  if (command == "extract") return extract(args);
  if (command == "convert") return convert(args);
  if (command == "inspect") return inspect(args);
  throw UsageError("unknown command \"" + command + "\" (combine, fold, extract, convert, inspect)");
}

}  // namespace lcd
