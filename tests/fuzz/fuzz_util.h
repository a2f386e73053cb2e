// Shared pieces of the libFuzzer harnesses (scripts/fuzz.sh builds and runs them). Each harness feeds the bytes to
// one reader; an lcdkit Error is the expected outcome for bad input, anything else (another exception, a crash,
// a sanitizer report, a leak) is a finding.
#pragma once
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <string>

namespace lcd::fuzz {

// The bytes as a file (readers that take a path: HDF5, PNG, idx), removed when it goes out of scope.
class TempFile {
 public:
  TempFile(const uint8_t* data, size_t size, const std::string& suffix)
      : path_("/tmp/lcdkit_fuzz_" + std::to_string(::getpid()) + suffix) {
    if (FILE* f = std::fopen(path_.c_str(), "wb")) {
      if (size) std::fwrite(data, 1, size, f);
      std::fclose(f);
    }
  }
  ~TempFile() { std::remove(path_.c_str()); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

}  // namespace lcd::fuzz
