// Checkpoints (see checkpoint.h).
#include "train/checkpoint.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <regex>

#include "autograd/atomic_file.h"
#include "autograd/errors.h"
#include "datasets/hdf5.h"

namespace lcd {

namespace fs = std::filesystem;

namespace {
Tensor as_tensor(const std::vector<float>& v) {
  Tensor t = Tensor::empty({static_cast<int64_t>(v.size())});
  std::copy(v.begin(), v.end(), t.data());
  return t;
}
std::vector<float> as_vector(const Tensor& t) { return std::vector<float>(t.data(), t.data() + t.numel()); }

// (step, path) of every checkpoint in dir.
std::vector<std::pair<int64_t, std::string>> checkpoints_in(const std::string& dir) {
  std::vector<std::pair<int64_t, std::string>> found;
  if (!fs::is_directory(dir)) return found;
  const std::regex pattern("checkpoint-(\\d+)(-emergency)?\\.h5");
  for (const auto& e : fs::directory_iterator(dir)) {
    std::smatch m;
    const std::string name = e.path().filename().string();
    if (std::regex_match(name, m, pattern)) found.emplace_back(std::stoll(m[1]), e.path().string());
  }
  std::sort(found.begin(), found.end());
  return found;
}
}  // namespace

std::vector<std::pair<std::string, std::vector<int64_t>>> layout_of(const FlatParameters& params) {
  std::vector<std::pair<std::string, std::vector<int64_t>>> out;
  for (const auto& e : params.entries()) out.emplace_back(e.name, e.tensor.shape().to_vector());
  return out;
}

std::string save_checkpoint(const std::string& dir, const TrainingState& s, int64_t keep, bool emergency) {
  fs::create_directories(dir);
  char name[64];
  std::snprintf(name, sizeof name, "checkpoint-%06lld%s.h5", static_cast<long long>(s.step), emergency ? "-emergency" : "");
  const std::string path = (fs::path(dir) / name).string();
  const std::string tmp = temp_path_for(path);
  {
    Hdf5File f = Hdf5File::create(tmp);
    f.write("/params", as_tensor(s.params));
    f.write("/ema", as_tensor(s.ema));
    f.write("/adam_m", as_tensor(s.adam_m));
    f.write("/adam_v", as_tensor(s.adam_v));
    f.write_bytes("/layout", nlohmann::json(s.layout).dump());
    f.write_bytes("/config", s.config_json);
    f.write_bytes("/rng_state", s.rng_state);
    f.set_attribute("/", "step", s.step);
    f.set_attribute("/", "adam_steps", s.adam_steps);
    f.set_attribute("/", "batcher_epoch", s.batcher_epoch);
    f.set_attribute("/", "batcher_position", s.batcher_position);
    f.set_attribute("/", "format", std::string("lcdkit-checkpoint-1"));
  }
  commit_temp_file(tmp, path);
  if (!emergency) {  // prune regular checkpoints beyond `keep`; emergency ones stay until a later save
    auto all = checkpoints_in(dir);
    std::vector<std::string> regular;
    for (auto& [step, p] : all)
      if (p.find("-emergency") == std::string::npos) regular.push_back(p);
    for (size_t i = 0; i + keep < regular.size(); ++i) fs::remove(regular[i]);
    for (auto& [step, p] : all)
      if (p.find("-emergency") != std::string::npos && step <= s.step) fs::remove(p);
  }
  return path;
}

TrainingState load_checkpoint(const std::string& path) {
  Hdf5File f = Hdf5File::open(path);
  if (!f.has_attribute("/", "format") || f.string_attribute("/", "format") != "lcdkit-checkpoint-1")
    throw FormatError(path + ": not an lcdkit checkpoint");
  TrainingState s;
  s.params = as_vector(f.read_tensor("/params"));
  s.ema = as_vector(f.read_tensor("/ema"));
  s.adam_m = as_vector(f.read_tensor("/adam_m"));
  s.adam_v = as_vector(f.read_tensor("/adam_v"));
  try {
    s.layout = nlohmann::json::parse(f.read_bytes("/layout")).get<decltype(s.layout)>();
  } catch (const nlohmann::json::exception& e) {
    throw FormatError(path + ": corrupt parameter layout (" + e.what() + ")");
  }
  s.config_json = f.read_bytes("/config");
  s.rng_state = f.read_bytes("/rng_state");
  s.step = f.int_attribute("/", "step");
  s.adam_steps = f.int_attribute("/", "adam_steps");
  s.batcher_epoch = f.int_attribute("/", "batcher_epoch");
  s.batcher_position = f.int_attribute("/", "batcher_position");
  const size_t n = s.params.size();
  if (s.ema.size() != n || s.adam_m.size() != n || s.adam_v.size() != n)
    throw FormatError(path + ": weights, EMA and AdamW moments have different sizes");
  return s;
}

std::string latest_checkpoint(const std::string& dir) {
  auto all = checkpoints_in(dir);
  return all.empty() ? std::string() : all.back().second;
}

}  // namespace lcd
