// Writes the fuzzers' seed corpus (scripts/fuzz.sh): for each target a few valid inputs made with lcdkit's own
// writers, so the corpus is generated, not stored. Usage: make_seeds OUT_DIR SOURCE_DIR
#include <zlib.h>

#include <filesystem>
#include <fstream>
#include <iostream>

#include "datasets/png.h"
#include "infer/io/lora_io.h"
#include "train/checkpoint.h"

namespace fs = std::filesystem;
using namespace lcd;

namespace {
void copy_into(const fs::path& from, const fs::path& dir) {
  fs::create_directories(dir);
  fs::copy_file(from, dir / (from.parent_path().filename().string() + "-" + from.filename().string()),
                fs::copy_options::overwrite_existing);
}
std::string idx_bytes() {
  std::string b = {0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 3};
  for (int i = 0; i < 18; ++i) b.push_back(static_cast<char>(i * 13));
  return b;
}
}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::cerr << "usage: make_seeds OUT_DIR SOURCE_DIR\n";
    return 2;
  }
  const fs::path out(argv[1]), src(argv[2]);
  for (const char* t : {"safetensors", "lora", "lora_hdf5", "checkpoint", "model_config", "train_config", "png", "idx"})
    fs::create_directories(out / t);
  // Adapters: a linear and a conv module, PEFT and kohya keys, F32 and F16; the same in HDF5.
  LoraAdapter a;
  a.modules["down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"] =
      LoraFactors{Tensor::full({2, 8}, 0.1f), Tensor::full({8, 2}, -0.2f), 4.0};
  a.modules["up_blocks.1.resnets.0.conv1"] = LoraFactors{Tensor::full({2, 4, 3, 3}, 0.05f), Tensor::full({4, 2, 1, 1}, 0.3f), 2.0};
  for (const char* t : {"safetensors", "lora"}) {
    write_lora((out / t / "peft.safetensors").string(), a, LoraFormat::kDiffusers);
    write_lora((out / t / "kohya-f16.safetensors").string(), a, LoraFormat::kKohya, DType::kF16);
  }
  write_lora((out / "lora_hdf5/adapter.h5").string(), a, LoraFormat::kHdf5);
  // A checkpoint of a two-tensor parameter set.
  TrainingState s;
  s.step = 4;
  s.adam_steps = 4;
  s.rng_state = "5489 0 0";
  s.batcher_epoch = 1;
  s.batcher_position = 2;
  s.config_json = R"({"train": {"steps": 10}})";
  s.layout = {{"a", {2, 3}}, {"b", {4}}};
  s.params.assign(10, 0.5f);
  s.ema.assign(10, 0.25f);
  s.adam_m.assign(10, 0.01f);
  s.adam_v.assign(10, 0.001f);
  save_checkpoint((out / "checkpoint").string(), s, 1);
  // Configs from the repository: the shipped model's and the training configs.
  for (const char* c : {"models/fmnist-ldm-v1/unet/config.json", "models/fmnist-ldm-v1/vae/config.json",
                        "models/fmnist-ldm-v1/scheduler/scheduler_config.json"})
    copy_into(src / c, out / "model_config");
  for (const auto& e : fs::directory_iterator(src / "configs")) copy_into(e.path(), out / "train_config");
  // Images: gray and RGB.
  write_png((out / "png/gray.png").string(), Image8{5, 3, 1, std::vector<uint8_t>(15, 200)});
  write_png((out / "png/rgb.png").string(), Image8{2, 2, 3, std::vector<uint8_t>(12, 7)});
  // idx: plain and gzip-compressed.
  const std::string idx = idx_bytes();
  std::ofstream(out / "idx/plain.idx", std::ios::binary) << idx;
  gzFile gz = gzopen((out / "idx/compressed.idx.gz").string().c_str(), "wb");
  gzwrite(gz, idx.data(), static_cast<unsigned>(idx.size()));
  gzclose(gz);
  return 0;
}
