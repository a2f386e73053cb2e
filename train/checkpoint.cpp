// Checkpoints (see checkpoint.h).
#include "train/checkpoint.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <regex>

#include "autograd/atomic_file.h"
#include "autograd/crash_points.h"
#include "autograd/errors.h"
#include "infer/nn/config_check.h"
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

std::string save_checkpoint(const std::string& dir, const TrainingState& s, int64_t keep) {
  const bool emergency = !s.stopped_by.empty();
  fs::create_directories(dir);
  char name[64];
  std::snprintf(name, sizeof name, "checkpoint-%06lld%s.h5", static_cast<long long>(s.step), emergency ? "-emergency" : "");
  const std::string path = (fs::path(dir) / name).string();
  write_through_temp_file(path, [&](const std::string& tmp) {
    Hdf5File f = Hdf5File::create(tmp);
    f.write("/params", as_tensor(s.params));
    f.write("/ema", as_tensor(s.ema));
    crash_point("checkpoint-write");  // half of the checkpoint is in its temp file
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
    if (emergency) f.set_attribute("/", "stopped_by", s.stopped_by);
  });
  crash_point("checkpoint-renamed");  // in place, older ones not yet pruned
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
  for (const char* d : {"/params", "/ema", "/adam_m", "/adam_v", "/layout", "/config", "/rng_state"})
    if (!f.exists(d)) throw FormatError(path + ": checkpoint lacks " + d);
  for (const char* a : {"step", "adam_steps", "batcher_epoch", "batcher_position"})
    if (!f.has_attribute("/", a)) throw FormatError(path + ": checkpoint lacks the attribute " + a);
  TrainingState s;
  s.params = as_vector(f.read_tensor("/params"));
  s.ema = as_vector(f.read_tensor("/ema"));
  s.adam_m = as_vector(f.read_tensor("/adam_m"));
  s.adam_v = as_vector(f.read_tensor("/adam_v"));
  try {
    s.layout = nlohmann::json::parse(f.read_bytes("/layout")).get<decltype(s.layout)>();
  } catch (const nlohmann::json::exception& e) {
    throw FormatError(path + ": corrupt parameter layout (" + json_error_text(e) + ")");
  }
  s.config_json = f.read_bytes("/config");
  s.rng_state = f.read_bytes("/rng_state");
  s.step = f.int_attribute("/", "step");
  s.adam_steps = f.int_attribute("/", "adam_steps");
  s.batcher_epoch = f.int_attribute("/", "batcher_epoch");
  s.batcher_position = f.int_attribute("/", "batcher_position");
  if (f.has_attribute("/", "stopped_by")) s.stopped_by = f.string_attribute("/", "stopped_by");
  const size_t n = s.params.size();
  if (s.ema.size() != n || s.adam_m.size() != n || s.adam_v.size() != n)
    throw FormatError(path + ": weights, EMA and AdamW moments have different sizes");
  int64_t layout_size = 0;
  for (const auto& [name, shape] : s.layout) {
    int64_t count = 1;
    for (int64_t d : shape) {
      if (d < 0 || d > (int64_t{1} << 32)) throw FormatError(path + ": parameter \"" + name + "\" has a bad shape in the layout");
      count *= d;
    }
    layout_size += count;
    if (layout_size > (int64_t{1} << 40)) throw FormatError(path + ": the layout is impossibly large");
  }
  if (layout_size != static_cast<int64_t>(n))
    throw FormatError(path + ": the layout describes " + std::to_string(layout_size) + " values but /params holds " +
                      std::to_string(n));
  if (s.step < 0 || s.adam_steps < 0 || s.adam_steps > s.step || s.batcher_epoch < 0 || s.batcher_position < 0)
    throw FormatError(path + ": step " + std::to_string(s.step) + ", adam_steps " + std::to_string(s.adam_steps) + ", batcher (" +
                      std::to_string(s.batcher_epoch) + ", " + std::to_string(s.batcher_position) + ") are not a reachable state");
  for (size_t i = 0; i < n; ++i)
    if (!std::isfinite(s.params[i]) || !std::isfinite(s.ema[i]) || !std::isfinite(s.adam_m[i]) || !std::isfinite(s.adam_v[i]) ||
        s.adam_v[i] < 0)
      throw FormatError(path + ": holds NaN, infinite or impossible values (element " + std::to_string(i) + ")");
  if (s.stopped_by != "" && s.stopped_by != "nonfinite" && s.stopped_by != "error")
    throw FormatError(path + ": unknown stopped_by \"" + s.stopped_by + "\"");
  return s;
}

std::string latest_checkpoint(const std::string& dir) {
  const auto all = checkpoints_newest_first(dir);
  return all.empty() ? std::string() : all.front();
}

std::vector<std::string> checkpoints_newest_first(const std::string& dir) {
  auto all = checkpoints_in(dir);
  // By step, newest first; at one step the emergency checkpoint first (it was written after the regular one).
  auto emergency = [](const std::string& p) { return p.find("-emergency") != std::string::npos; };
  std::stable_sort(all.begin(), all.end(), [&](const auto& a, const auto& b) {
    return a.first != b.first ? a.first > b.first : emergency(a.second) && !emergency(b.second);
  });
  std::vector<std::string> out;
  for (const auto& [step, path] : all) out.push_back(path);
  return out;
}

}  // namespace lcd
