// The lcd-train executable: [mpirun -np N] lcd-train CONFIG.json [--resume DIR] [--threads N] (DESIGN.md §7), and
// lcd-train --export-checkpoint CKPT --out FILE [--ema]: the adapter of one checkpoint.
#include <iostream>
#include <memory>

#include "autograd/threads.h"
#include "infer/io/lora_io.h"
#include "infer/tools/cli.h"
#include "infer/tools/no_overwrite.h"
#include "train/checkpoint_export.h"
#include "train/config.h"
#include "train/distributed.h"
#include "train/trainer.h"

namespace {

// Writes the adapter of checkpoint `from` to `out` (.h5: HDF5; otherwise one diffusers safetensors file).
int export_checkpoint(const std::string& from, const std::string& out, bool ema) {
  if (out.empty()) throw lcd::UsageError("--export-checkpoint needs --out FILE");
  lcd::refuse_overwriting_inputs({"--out", out}, {{"--export-checkpoint", from}});
  const lcd::LoraAdapter a = lcd::adapter_from_checkpoint(lcd::load_checkpoint(from), ema, from);
  const bool h5 = out.size() > 3 && out.compare(out.size() - 3, 3, ".h5") == 0;
  lcd::write_lora(out, a, h5 ? lcd::LoraFormat::kHdf5 : lcd::LoraFormat::kDiffusers);
  std::cerr << "lcd-train: wrote " << out << " (" << (ema ? "EMA" : "online") << " adapter at step " << a.metadata.at("lcdkit.step")
            << ")\n";
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::unique_ptr<lcd::MpiSession> mpi;
  const int rc = lcd::run_tool("lcd-train", [&] {
    mpi = std::make_unique<lcd::MpiSession>(&argc, &argv);  // MPI only under mpirun
    if (!lcd::world().is_root()) std::cerr.rdbuf(nullptr);   // rank 0 alone speaks; errors reach it (distributed.h)
    std::string config_path, resume, threads, export_from, export_out, mpi_timeout;
    bool help_config = false, print_config = false, ema = false;
    lcd::ArgParser p("lcd-train", "CONFIG.json [--resume DIR] [--threads N] | --export-checkpoint CKPT --out FILE [--ema]",
                     "Consistency distillation of a LoRA adapter (objectives \"lcd\", \"pcm\", \"lcf\"), or diffusion training\n"
                     "of a style LoRA or the whole UNet (objective \"diffusion\"), from a JSON config; under mpirun -np N, N\n"
                     "processes train one run (train.batch_size is the whole batch). See --help-config for\n"
                     "every key and its default.");
    p.positional("CONFIG.json", "the run's configuration", &config_path, false);
    p.option("--resume", "DIR", "continue the run in DIR from its latest checkpoint", &resume);
    p.threads(&threads, "; per process under mpirun; overrides the config's threads");
    p.flag("--help-config", "list every config key with its default and meaning", &help_config);
    p.flag("--print-config", "print a config file with every key at its default, each documented in a // comment "
           "(lcd-train reads it as it is)", &print_config);
    p.option("--export-checkpoint", "CKPT", "write the adapter held by checkpoint CKPT (with --out) and exit", &export_from);
    p.option("--out", "FILE", "where --export-checkpoint writes (.h5: HDF5, else a diffusers safetensors file)", &export_out);
    p.flag("--ema", "--export-checkpoint: the EMA adapter instead of the online one", &ema);
    p.option("--mpi-timeout", "SECONDS", "under mpirun: how long a process waits for the others before the run ends "
             "(default 600)", &mpi_timeout);
    if (!p.parse(argc, argv)) return 0;
    if (!export_from.empty()) return export_checkpoint(export_from, export_out, ema);
    if (print_config) {
      std::cout << lcd::commented_default_config();
      return 0;
    }
    if (help_config) {
      std::cout << lcd::describe_config();
      return 0;
    }
    lcd::TrainConfig config;
    lcd::on_every_process([&] {
      if (config_path.empty()) throw lcd::UsageError("missing CONFIG.json");
      if (!mpi_timeout.empty()) lcd::world().set_timeout(static_cast<double>(lcd::parse_int("--mpi-timeout", mpi_timeout, 1, 86400)));
      config = lcd::load_train_config(config_path);
      if (!threads.empty()) {
        config.threads = lcd::parse_int("--threads", threads, 1, 4096);
        config.resolved["threads"] = config.threads;
      }
    });
    lcd::Trainer trainer(config, resume);
    trainer.run();
    return 0;
  });
  return mpi ? mpi->finish(rc) : rc;
}
