// Strict diffusers config checks (see config_check.h).
#include "infer/nn/config_check.h"

#include <fstream>

#include "autograd/errors.h"

namespace lcd {

void check_config_fields(const nlohmann::json& config, const ConfigRules& rules, const std::string& origin) {
  for (auto it = config.begin(); it != config.end(); ++it) {
    const std::string& key = it.key();
    if (key.rfind("_", 0) == 0 || rules.used.count(key) || rules.free.count(key)) continue;  // "_class_name" etc.
    auto m = rules.must_equal.find(key);
    if (m == rules.must_equal.end())
      throw ConfigError(origin + ": unknown field \"" + key + "\" = " + it.value().dump());
    const bool equal = it.value() == m->second ||
                       (it.value().is_number() && m->second.is_number() &&
                        it.value().get<double>() == m->second.get<double>());
    if (!equal)
      throw ConfigError(origin + ": unsupported field \"" + key + "\" = " + it.value().dump() +
                        " (lcdkit supports only " + m->second.dump() + ")");
  }
}

std::string json_error_text(const std::exception& e) {
  std::string m = e.what();
  if (m.rfind("[json.exception.", 0) == 0)
    if (const auto close = m.find("] "); close != std::string::npos) m = m.substr(close + 2);
  if (m.rfind("parse error at ", 0) == 0) m = m.substr(15);
  return m;
}

void throw_wrong_type(const std::string& origin, const char* key, const nlohmann::json& value) {
  throw ConfigError(origin + ": field \"" + key + "\" = " + value.dump() + " has the wrong type or is out of range");
}

nlohmann::json read_json_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw IoError(path + ": cannot open");
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(in, nullptr, true, /*ignore_comments=*/true);  // // and /* */ comments allowed
  } catch (const nlohmann::json::exception& e) {
    throw ConfigError(path + ": not valid JSON (" + json_error_text(e) + ")");
  }
  if (!j.is_object()) throw ConfigError(path + ": expected a JSON object");
  return j;
}

}  // namespace lcd
