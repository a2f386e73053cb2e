// Fuzz target: lcd-train's config parser (overlay on the defaults, types, ranges, list elements) on JSON text.
#include <nlohmann/json.hpp>

#include "autograd/errors.h"
#include "train/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const nlohmann::json j = nlohmann::json::parse(data, data + size, nullptr, false);
  if (j.is_discarded()) return 0;  // read_json_file refuses it first
  try {
    (void)lcd::parse_train_config(j, "fuzz.json");
  } catch (const lcd::Error&) {
  }
  return 0;
}
