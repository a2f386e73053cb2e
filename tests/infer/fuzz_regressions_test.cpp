// Inputs the fuzzers (tests/fuzz, scripts/fuzz.sh) found to crash a reader, kept in tests/fuzz/regressions/
// <target>/ as they were found: each must now be refused with an lcdkit Error, through the same reader.
// (Findings that a few bytes describe are written out in the readers' own tests instead, e.g. idx_test.cpp.)
#include <gtest/gtest.h>

#include <filesystem>
#include <functional>
#include <map>

#include "autograd/errors.h"
#include "datasets/png.h"
#include "infer/io/lora_io.h"
#include "train/checkpoint.h"

namespace lcd::testing {
namespace {

namespace fs = std::filesystem;

TEST(FuzzRegressions, EveryStoredFindingIsRefusedCleanly) {
  const std::map<std::string, std::function<void(const std::string&)>> readers = {
      {"lora_hdf5", [](const std::string& p) { read_lora(p); }},
      {"lora", [](const std::string& p) { read_lora(p); }},
      {"safetensors", [](const std::string& p) { SafetensorsFile::read(p); }},
      {"checkpoint", [](const std::string& p) { load_checkpoint(p); }},
      {"png", [](const std::string& p) { read_png(p, 1); }},
  };
  const fs::path root = fs::path(LCDKIT_SOURCE_DIR) / "tests/fuzz/regressions";
  int checked = 0;
  for (const auto& dir : fs::directory_iterator(root)) {
    const auto reader = readers.find(dir.path().filename().string());
    ASSERT_NE(reader, readers.end()) << "no reader for " << dir.path();
    for (const auto& file : fs::directory_iterator(dir.path())) {
      EXPECT_THROW(reader->second(file.path().string()), Error) << file.path();
      ++checked;
    }
  }
  EXPECT_GE(checked, 1);
}

}  // namespace
}  // namespace lcd::testing
