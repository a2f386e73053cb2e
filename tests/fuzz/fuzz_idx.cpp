// Fuzz target: the idx reader (plain or gzip-compressed Fashion-MNIST files).
#include "autograd/errors.h"
#include "datasets/idx.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  lcd::fuzz::TempFile file(data, size, ".idx");
  try {
    (void)lcd::read_idx(file.path());
  } catch (const lcd::Error&) {
  }
  return 0;
}
