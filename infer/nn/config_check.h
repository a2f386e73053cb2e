// Strict reading of diffusers config.json files: every field must be one lcdkit implements, or one it can
// ignore because it holds the value that means "feature off"; anything else is a ConfigError naming the field
// and its value (never a silent misbuild).
#pragma once
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <limits>
#include <string>
#include <type_traits>

namespace lcd {

struct ConfigRules {
  std::set<std::string> used;                        // fields the builder reads
  std::set<std::string> free;                        // fields with no effect on the computation (any value)
  std::map<std::string, nlohmann::json> must_equal;  // fields accepted only with this value
};

// Throws ConfigError "<origin>: unsupported field "<key>" = <value> (lcdkit supports only <expected>)".
void check_config_fields(const nlohmann::json& config, const ConfigRules& rules, const std::string& origin);

// The value of `key` as a V, or `fallback` when absent or null; a value of another type is a ConfigError naming
// the file, the field and the value.
template <class V>
V config_field(const nlohmann::json& j, const char* key, const V& fallback, const std::string& origin);

// A JSON library error as plain words: its "[json.exception.parse_error.101] " tag removed.
std::string json_error_text(const std::exception& e);

// Reads config.json; IoError if missing, ConfigError naming the file if it is not a JSON object.
nlohmann::json read_json_file(const std::string& path);

void throw_wrong_type(const std::string& origin, const char* key, const nlohmann::json& value);

template <class V>
V config_field(const nlohmann::json& j, const char* key, const V& fallback, const std::string& origin) {
  if (!j.contains(key) || j[key].is_null()) return fallback;
  const nlohmann::json& v = j[key];
  try {
    if constexpr (std::is_integral_v<V> && !std::is_same_v<V, bool>) {
      if (!v.is_number_integer()) throw_wrong_type(origin, key, v);
      const bool fits = v.is_number_unsigned()
                            ? v.get<uint64_t>() <= static_cast<uint64_t>(std::numeric_limits<V>::max())
                            : v.get<int64_t>() >= static_cast<int64_t>(std::numeric_limits<V>::min()) &&
                                  v.get<int64_t>() <= static_cast<int64_t>(std::numeric_limits<V>::max());
      if (!fits) throw_wrong_type(origin, key, v);
    } else if constexpr (std::is_floating_point_v<V>) {
      if (!v.is_number()) throw_wrong_type(origin, key, v);
    }
    return v.get<V>();
  } catch (const nlohmann::json::exception&) {
    throw_wrong_type(origin, key, v);
  }
  return fallback;
}

}  // namespace lcd
