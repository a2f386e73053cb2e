// safetensors: round trips in every float dtype, the reference reader's validation rules, duplicate keys,
// and F16/BF16 rounding against values computed by hand.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "autograd/errors.h"
#include "infer/io/half.h"
#include "infer/io/safetensors.h"

namespace lcd {
namespace {

namespace fs = std::filesystem;

std::vector<uint8_t> file_bytes(const std::string& header, size_t data_bytes) {
  std::vector<uint8_t> b(8);
  for (int i = 0; i < 8; ++i) b[i] = (header.size() >> (8 * i)) & 0xff;
  b.insert(b.end(), header.begin(), header.end());
  b.resize(b.size() + data_bytes, 0);
  return b;
}

void expect_format_error(const std::vector<uint8_t>& bytes, const std::string& fragment) {
  try {
    SafetensorsFile::parse(bytes, "test.safetensors");
    ADD_FAILURE() << "accepted; expected an error mentioning: " << fragment;
  } catch (const FormatError& e) {
    EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("test.safetensors"), std::string::npos) << e.what();
  }
}

TEST(Safetensors, RoundTripsEveryFloatDtypeAndMetadata) {
  const fs::path path = fs::temp_directory_path() / ("lcdkit_st_" + std::to_string(::getpid()) + ".safetensors");
  Tensor a = Tensor::from_vector({2, 3}, {1.0f, -2.5f, 0.125f, 3.0f, 1e-3f, -7.0f});
  write_safetensors(path.string(),
                    {{"f32", a, DType::kF32}, {"f16", a, DType::kF16}, {"bf16", a, DType::kBF16}, {"f64", a, DType::kF64},
                     {"alpha", Tensor::full({}, 8.0f), DType::kI64}},
                    {{"format", "pt"}});
  SafetensorsFile f = SafetensorsFile::read(path.string());
  EXPECT_EQ(f.metadata().at("format"), "pt");
  EXPECT_EQ(f.entry("f16").dtype, DType::kF16);
  for (const char* name : {"f32", "f64"})
    for (int i = 0; i < 6; ++i) EXPECT_EQ(f.tensor(name).data()[i], a.data()[i]) << name;
  for (int i = 0; i < 6; ++i) {
    EXPECT_NEAR(f.tensor("f16").data()[i], a.data()[i], std::abs(a.data()[i]) * 1e-3);
    EXPECT_NEAR(f.tensor("bf16").data()[i], a.data()[i], std::abs(a.data()[i]) * 8e-3);
  }
  EXPECT_EQ(f.scalar("alpha"), 8.0);
  std::ifstream raw(path, std::ios::binary);
  uint64_t header_len = 0;
  raw.read(reinterpret_cast<char*>(&header_len), 8);
  EXPECT_EQ(header_len % 8, 0u) << "the data section must start 8-aligned";
  fs::remove(path);
}

TEST(Safetensors, HalfAndBfloatRoundToNearestEven) {
  EXPECT_EQ(float_to_half(1.0f), 0x3c00);
  EXPECT_EQ(float_to_half(65504.0f), 0x7bff);
  EXPECT_EQ(float_to_half(1e6f), 0x7c00);               // overflow → inf
  EXPECT_EQ(float_to_half(5.9604645e-8f), 0x0001);      // smallest subnormal
  EXPECT_EQ(float_to_half(1.0f + 1.0f / 2048), 0x3c00);  // halfway between 1 and next: ties to even (down)
  EXPECT_EQ(float_to_half(1.0f + 3.0f / 2048), 0x3c02);  // halfway, ties to even (up)
  EXPECT_EQ(half_to_float(0x0001), 5.9604645e-8f);
  EXPECT_EQ(half_to_float(0xc000), -2.0f);
  EXPECT_EQ(float_to_bf16(1.0f), 0x3f80);
  EXPECT_EQ(float_to_bf16(1.0f + 1.0f / 256), 0x3f80);  // tie → even
  EXPECT_EQ(bf16_to_float(0x4040), 3.0f);
}

TEST(Safetensors, AppliesTheReferenceValidationRules) {
  expect_format_error({1, 2, 3}, "shorter than the 8-byte header");
  {
    std::vector<uint8_t> b(8, 0);
    b[4] = 1;  // 2^32: over 100 MB
    expect_format_error(b, "exceeds 100,000,000");
  }
  {
    auto b = file_bytes("{}", 0);
    b[0] = 200;  // longer than the file
    expect_format_error(b, "runs past the end");
  }
  expect_format_error(file_bytes("{\"a\": \xff}", 0), "not valid UTF-8 JSON");
  expect_format_error(file_bytes(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                                 R"("b":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 8),
                      "overlap or leave a gap");
  expect_format_error(file_bytes(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8), "need 12");
  expect_format_error(file_bytes(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 9), "trailing");
  expect_format_error(file_bytes(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 4), "truncated");
  expect_format_error(file_bytes(R"({"a":{"dtype":"Q7","shape":[2],"data_offsets":[0,8]}})", 8), "unsupported dtype Q7");
  expect_format_error(file_bytes(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                                 R"("a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", 8),
                      "duplicate key \"a\"");
  // Whitespace padding on both ends of the header is accepted, as by the reference reader.
  EXPECT_NO_THROW(SafetensorsFile::parse(file_bytes(R"(  {"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}  )", 4), "ok"));
}

TEST(Safetensors, ReadingAMissingFileNamesIt) {
  try {
    SafetensorsFile::read("/nonexistent/x.safetensors");
    FAIL();
  } catch (const IoError& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/x.safetensors"), std::string::npos);
  }
}

// A mapped file: tensors large enough to span pages are read straight into a buffer (every dtype's
// conversion, against the values written), their pages released, and read again unchanged; the mapping
// outlives a copy of the file object; a file that is not a regular file is refused by name.
TEST(Safetensors, MappedTensorsReadReleaseAndReadAgain) {
  const fs::path path = fs::temp_directory_path() / ("lcdkit_st_map_" + std::to_string(::getpid()) + ".safetensors");
  const int64_t n = 3 * 4096 + 5;  // several pages, not a whole number of them
  Tensor a = Tensor::empty({n});
  for (int64_t i = 0; i < n; ++i) a.data()[i] = static_cast<float>((i % 251) - 125) * 0.25f;  // exact in F16 and BF16
  write_safetensors(path.string(), {{"a32", a, DType::kF32}, {"a16", a, DType::kF16}, {"b16", a, DType::kBF16}});
  std::unique_ptr<SafetensorsFile> copy;
  {
    const SafetensorsFile f = SafetensorsFile::read(path.string());
    copy = std::make_unique<SafetensorsFile>(f);
  }
  for (const char* name : {"a32", "a16", "b16"}) {
    std::vector<float> out(static_cast<size_t>(n), -1.0f);
    for (int pass = 0; pass < 2; ++pass) {
      copy->read_floats(name, out.data());
      for (int64_t i = 0; i < n; ++i) ASSERT_EQ(out[i], a.data()[i]) << name << " pass " << pass << " at " << i;
      copy->release(name);
    }
  }
  fs::remove(path);
  try {
    SafetensorsFile::read(fs::temp_directory_path().string());
    FAIL() << "a folder was read as a safetensors file";
  } catch (const IoError& e) {
    EXPECT_NE(std::string(e.what()).find("not a regular file"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace lcd
