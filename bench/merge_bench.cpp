// lora-merge at Stable Diffusion 1.5 scale: two synthetic rank-64 adapters on every LoRA target module of the
// SD1.5 UNet (module shapes from the architecture, no weights allocated), combined with --method svd --rank 64
// by the lora-merge binary. Prints its time and peak memory next to the size of one full ΔW set, which a
// "form ΔW then SVD" merge would hold.
// Usage: merge_bench [--threads N] [--keep DIR]
#include <sys/resource.h>
#include <sys/wait.h>
#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>

#include "autograd/errors.h"
#include "autograd/random.h"
#include "bench/random_weights.h"
#include "infer/io/lora_io.h"
#include "infer/nn/unet.h"
#include "infer/tools/cli.h"

using namespace lcd;
namespace fs = std::filesystem;

int main(int argc, char** argv) {
  return run_tool("merge_bench", [&] {
    std::string dir_flag;
    ArgParser p("merge_bench", "[--keep DIR]", "Times lora-merge combine --method svd on SD1.5-sized adapters.");
    p.option("--keep", "DIR", "write the adapters here and keep them (default: a temp folder, removed)", &dir_flag);
    if (!p.parse(argc, argv)) return 0;
    const fs::path dir = dir_flag.empty() ? fs::temp_directory_path() / ("lcdkit_merge_bench_" + std::to_string(::getpid())) : fs::path(dir_flag);
    fs::create_directories(dir);
    // Stable Diffusion 1.5's UNet config (diffusers).
    nlohmann::json sd15 = {{"down_block_types", {"CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"}},
                           {"up_block_types", {"UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"}},
                           {"block_out_channels", {320, 640, 1280, 1280}},
                           {"layers_per_block", 2},
                           {"attention_head_dim", 8},
                           {"cross_attention_dim", 768},
                           {"norm_num_groups", 32},
                           {"in_channels", 4},
                           {"out_channels", 4},
                           {"sample_size", 64}};
    std::vector<std::pair<std::string, Shape>> targets;
    double full_delta_bytes = 0;
    {
      ShapeOnlyGuard shapes_only;
      UNet2DConditionModel unet(UNetConfig::from_json(sd15, "sd15"));
      for (auto& [name, m] : lora_target_modules(unet, default_lora_targets())) {
        const Shape w = m->lora_layer()->weight.shape();
        targets.emplace_back(name, w);
        full_delta_bytes += 4.0 * w.numel();
      }
    }
    const int64_t rank = 64;
    double factor_params = 0;
    for (int a = 0; a < 2; ++a) {
      Rng rng(100 + a);
      LoraAdapter adapter;
      for (const auto& [name, w] : targets) {
        LoraFactors f = random_lora_factors(w, rank, rng);
        factor_params += f.down.numel() + f.up.numel();
        adapter.modules[name] = f;
      }
      write_lora((dir / ("a" + std::to_string(a) + ".safetensors")).string(), adapter, LoraFormat::kKohya, DType::kF16);
    }
    std::printf("SD1.5 UNet: %zu LoRA target modules; one full ΔW set (float32): %.2f GB; each rank-64 adapter: %.1f M parameters (F16 file)\n",
                targets.size(), full_delta_bytes / 1e9, factor_params / 2e6);
    std::fflush(stdout);
    const std::string tool = (fs::path(argv[0]).parent_path().parent_path() / "lora-merge").string();
    const auto t0 = std::chrono::steady_clock::now();
    const pid_t pid = fork();
    if (pid == 0) {
      const std::string out = (dir / "merged.safetensors").string(), a0 = (dir / "a0.safetensors").string(),
                        a1 = (dir / "a1.safetensors").string();
      const int null_fd = ::open("/dev/null", O_WRONLY);
      dup2(null_fd, STDOUT_FILENO);
      execl(tool.c_str(), "lora-merge", "combine", out.c_str(), (a0 + ":0.7").c_str(), (a1 + ":0.5").c_str(), "--method",
            "svd", "--rank", "64", static_cast<char*>(nullptr));
      _exit(127);
    }
    int status = 0;
    struct rusage usage {};
    wait4(pid, &status, 0, &usage);
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) throw Error("lora-merge failed (" + tool + ")");
    std::printf("lora-merge combine --method svd --rank 64: %.1f s, peak resident memory %.2f GB (%.0f%% of one full ΔW set)\n", secs,
                usage.ru_maxrss / 1e6, 100.0 * usage.ru_maxrss * 1e3 / full_delta_bytes);
    if (dir_flag.empty()) fs::remove_all(dir);
    return 0;
  });
}
