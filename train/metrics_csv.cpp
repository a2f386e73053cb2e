// metrics.csv from metrics.jsonl (see metrics_csv.h).
#include "train/metrics_csv.h"

#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <vector>

#include "autograd/atomic_file.h"

namespace lcd {

namespace {

// A cell: numbers as JSON writes them (shortest round-trip form), strings quoted when they need it.
std::string cell(const nlohmann::json& v) {
  if (!v.is_string()) return v.dump();
  const std::string s = v.get<std::string>();
  if (s.find_first_of(",\"\n") == std::string::npos) return s;
  std::string q = "\"";
  for (char ch : s) q += ch == '"' ? std::string("\"\"") : std::string(1, ch);
  return q + "\"";
}

}  // namespace

void write_metrics_csv(const std::string& run_dir) {
  namespace fs = std::filesystem;
  std::ifstream in(fs::path(run_dir) / "metrics.jsonl");
  std::vector<nlohmann::json> rows;
  std::vector<std::string> columns;
  std::map<std::string, bool> known;
  for (const char* first : {"step", "loss"}) {  // the columns a reader looks for first; the rest by name
    columns.push_back(first);
    known[first] = true;
  }
  for (std::string line; std::getline(in, line);) {
    const nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_discarded() || !j.is_object()) continue;
    for (auto it = j.begin(); it != j.end(); ++it)
      if (!known[it.key()]) {
        known[it.key()] = true;
        columns.push_back(it.key());
      }
    rows.push_back(j);
  }
  std::ostringstream out;
  for (size_t c = 0; c < columns.size(); ++c) out << (c ? "," : "") << columns[c];
  out << "\n";
  for (const auto& row : rows) {
    for (size_t c = 0; c < columns.size(); ++c) {
      if (c) out << ",";
      if (row.contains(columns[c])) out << cell(row[columns[c]]);
    }
    out << "\n";
  }
  write_file_atomically((fs::path(run_dir) / "metrics.csv").string(), out.str());
}

}  // namespace lcd
