// Fuzz target: the safetensors reader (header validation) and the conversion of every tensor it accepts.
#include "autograd/errors.h"
#include "infer/io/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    lcd::SafetensorsFile f = lcd::SafetensorsFile::parse(std::vector<uint8_t>(data, data + size), "fuzz.safetensors");
    for (const auto& name : f.names()) {
      try {
        (void)f.tensor(name);
      } catch (const lcd::Error&) {
      }
    }
  } catch (const lcd::Error&) {
  }
  return 0;
}
