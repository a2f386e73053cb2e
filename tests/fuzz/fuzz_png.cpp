// Fuzz target: the PNG reader (libpng through lcdkit's error handling), as grayscale and as RGB.
#include "autograd/errors.h"
#include "datasets/png.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  lcd::fuzz::TempFile file(data, size, ".png");
  for (int channels : {1, 3}) {
    try {
      (void)lcd::read_png(file.path(), channels);
    } catch (const lcd::Error&) {
    }
  }
  return 0;
}
