// Strict reading of diffusers config.json files: every field must be one lcdkit implements, or one it can
// ignore because it holds the value that means "feature off"; anything else is a ConfigError naming the field
// and its value (never a silent misbuild).
#pragma once
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <string>

namespace lcd {

struct ConfigRules {
  std::set<std::string> used;                        // fields the builder reads
  std::set<std::string> free;                        // fields with no effect on the computation (any value)
  std::map<std::string, nlohmann::json> must_equal;  // fields accepted only with this value
};

// Throws ConfigError "<origin>: unsupported field "<key>" = <value> (lcdkit supports only <expected>)".
void check_config_fields(const nlohmann::json& config, const ConfigRules& rules, const std::string& origin);

// Reads config.json; IoError if missing, ConfigError naming the file if it is not a JSON object.
nlohmann::json read_json_file(const std::string& path);

}  // namespace lcd
