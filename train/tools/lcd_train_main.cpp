// The lcd-train executable: lcd-train CONFIG.json [--resume DIR] [--threads N] (DESIGN.md §7).
#include <iostream>

#include "autograd/threads.h"
#include "infer/tools/cli.h"
#include "train/config.h"
#include "train/trainer.h"

int main(int argc, char** argv) {
  return lcd::run_tool("lcd-train", [&] {
    std::string config_path, resume, threads;
    bool help_config = false;
    lcd::ArgParser p("lcd-train", "CONFIG.json [--resume DIR] [--threads N]",
                     "Latent consistency distillation of a LoRA adapter (objective \"lcd\"), or diffusion training of a\n"
                     "style LoRA or the whole UNet (objective \"diffusion\"), from a JSON config. See --help-config for\n"
                     "every key and its default.");
    p.positional("CONFIG.json", "the run's configuration", &config_path, false);
    p.option("--resume", "DIR", "continue the run in DIR from its latest checkpoint", &resume);
    p.option("--threads", "N", "threads (overrides the config's threads)", &threads);
    p.flag("--help-config", "list every config key with its default and meaning", &help_config);
    if (!p.parse(argc, argv)) return 0;
    if (help_config) {
      std::cout << lcd::describe_config();
      return 0;
    }
    if (config_path.empty()) throw lcd::UsageError("missing CONFIG.json");
    lcd::TrainConfig config = lcd::load_train_config(config_path);
    if (!threads.empty()) {
      config.threads = lcd::parse_int("--threads", threads, 1, 4096);
      config.resolved["threads"] = config.threads;
    }
    lcd::Trainer trainer(config, resume);
    trainer.run();
    return 0;
  });
}
