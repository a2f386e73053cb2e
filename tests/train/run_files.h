// Reading a training run's files in the trainer tests: whole files as bytes, and the logged metrics without
// their wall-clock fields (which differ between otherwise identical runs).
#pragma once
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace lcd::testing {

inline std::string slurp(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// metrics.jsonl of `run`, one object per line, without step_time and comm_time.
inline std::vector<nlohmann::json> logged_metrics(const std::filesystem::path& run) {
  std::vector<nlohmann::json> out;
  std::ifstream in(run / "metrics.jsonl");
  for (std::string l; std::getline(in, l);) {
    nlohmann::json j = nlohmann::json::parse(l);
    j.erase("step_time");
    j.erase("comm_time");
    out.push_back(j);
  }
  return out;
}

}  // namespace lcd::testing
