// Fuzz target: checkpoint restore (HDF5 datasets and attributes, the layout JSON, the consistency checks).
#include "autograd/errors.h"
#include "tests/fuzz/fuzz_util.h"
#include "train/checkpoint.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  lcd::fuzz::TempFile file(data, size, ".h5");
  try {
    (void)lcd::load_checkpoint(file.path());
  } catch (const lcd::Error&) {
  }
  return 0;
}
