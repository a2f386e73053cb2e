// Fuzz target: the HDF5 adapter reader (/lora/<module>/{A,B} with an alpha attribute).
#include "autograd/errors.h"
#include "infer/io/lora_io.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  lcd::fuzz::TempFile file(data, size, ".h5");
  try {
    lcd::LoraAdapter a = lcd::read_lora(file.path());
    lcd::validate_lora_adapter(a, "fuzz");
  } catch (const lcd::Error&) {
  }
  return 0;
}
