// Fuzz target: the adapter reader on safetensors bytes (PEFT/diffusers and kohya keys, metadata, alphas), strict
// and with unmatched keys allowed; whatever it returns must pass validation again.
#include "autograd/errors.h"
#include "infer/io/lora_io.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  for (bool allow_unmatched : {false, true}) {
    try {
      lcd::SafetensorsFile f = lcd::SafetensorsFile::parse(std::vector<uint8_t>(data, data + size), "fuzz.safetensors");
      std::vector<std::string> skipped;
      lcd::LoraAdapter a = lcd::read_lora(f, "/nonexistent/adapter_config.json", allow_unmatched, &skipped);
      lcd::validate_lora_adapter(a, "fuzz");  // throws only if the reader let something through
    } catch (const lcd::Error&) {
    }
  }
  return 0;
}
