// Access to ../shared/golden and whole-tensor comparison relative to the reference's max magnitude.
#pragma once
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

#include "infer/io/safetensors.h"

namespace lcd::testing {

inline std::string golden_dir(const std::string& name) { return std::string(LCDKIT_SHARED_DIR) + "/golden/" + name; }

// manifest.json as written by Python's json module, whose -Infinity/Infinity/NaN are not JSON: read as strings.
inline nlohmann::json golden_manifest(const std::string& name) {
  std::ifstream in(golden_dir(name + "/manifest.json"));
  std::stringstream buffer;
  buffer << in.rdbuf();
  std::string text = buffer.str();
  for (const char* word : {"-Infinity", "Infinity", "NaN"})
    for (size_t pos; (pos = text.find(std::string(": ") + word)) != std::string::npos;)
      text.replace(pos, 2 + std::string(word).size(), std::string(": \"") + word + "\"");
  return nlohmann::json::parse(text);
}

inline bool golden_available() { return std::filesystem::exists(golden_dir("diffusers-A/tensors.safetensors")); }

// max |got − want| ≤ rel · max |want| over the whole tensor (DESIGN.md §8.7, §9).
inline void expect_whole_tensor_close(const Tensor& got, const Tensor& want, double rel, const std::string& what) {
  ASSERT_EQ(got.shape(), want.shape()) << what;
  double max_ref = 0, max_err = 0;
  int64_t worst = 0;
  for (int64_t i = 0; i < want.numel(); ++i) {
    max_ref = std::max(max_ref, double(std::abs(want.data()[i])));
    const double err = std::abs(double(got.data()[i]) - want.data()[i]);
    if (!(err <= max_err) && !std::isnan(max_err)) {  // a NaN error is taken and then kept (the check fails)
      max_err = err;
      worst = i;
    }
  }
  std::printf("%s: max error %.3g, %.3g of the reference max %.3g\n", what.c_str(), max_err,
              max_ref > 0 ? max_err / max_ref : 0.0, max_ref);
  EXPECT_LE(max_err, rel * max_ref) << what << ": max error " << max_err << " at element " << worst << " (got "
                                    << got.data()[worst] << ", want " << want.data()[worst] << "), reference max "
                                    << max_ref;
}

}  // namespace lcd::testing
