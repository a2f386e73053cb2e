// idx / Fashion-MNIST reader: fixtures written here (plain and gzipped), bad inputs, and the real files.
#include <gtest/gtest.h>
#include <zlib.h>

#include <filesystem>
#include <fstream>

#include "autograd/errors.h"
#include "datasets/fashion_mnist.h"
#include "datasets/idx.h"

namespace lcd {
namespace {

namespace fs = std::filesystem;

std::vector<uint8_t> idx_bytes(uint8_t rank, std::vector<uint32_t> dims, std::vector<uint8_t> data) {
  std::vector<uint8_t> out = {0, 0, 0x08, rank};
  for (uint32_t d : dims)
    for (int s = 24; s >= 0; s -= 8) out.push_back(static_cast<uint8_t>(d >> s));
  out.insert(out.end(), data.begin(), data.end());
  return out;
}

void write_file(const fs::path& p, const std::vector<uint8_t>& bytes, bool gzip) {
  if (gzip) {
    gzFile f = gzopen(p.c_str(), "wb");
    gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size()));
    gzclose(f);
  } else {
    std::ofstream(p, std::ios::binary).write(reinterpret_cast<const char*>(bytes.data()), bytes.size());
  }
}

class IdxTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("lcdkit_idx_" + std::to_string(::getpid()));
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  fs::path dir_;
};

TEST_F(IdxTest, ReadsPlainAndGzippedFiles) {
  for (bool gz : {false, true}) {
    fs::path p = dir_ / (gz ? "a.gz" : "a");
    write_file(p, idx_bytes(2, {2, 3}, {1, 2, 3, 4, 5, 6}), gz);
    IdxArray a = read_idx(p.string());
    EXPECT_EQ(a.dims, (std::vector<int64_t>{2, 3}));
    EXPECT_EQ(a.data[5], 6);
  }
}

TEST_F(IdxTest, RejectsBadMagicTruncationAndTrailingBytes) {
  write_file(dir_ / "magic", {0, 0, 0x0D, 1, 0, 0, 0, 1, 7}, false);
  EXPECT_THROW(read_idx((dir_ / "magic").string()), FormatError);
  write_file(dir_ / "short", idx_bytes(1, {10}, {1, 2, 3}), true);
  EXPECT_THROW(read_idx((dir_ / "short").string()), IoError);
  write_file(dir_ / "long", idx_bytes(1, {2}, {1, 2, 3}), false);
  EXPECT_THROW(read_idx((dir_ / "long").string()), FormatError);
  EXPECT_THROW(read_idx((dir_ / "missing").string()), IoError);
  // A gzip stream cut in the middle.
  write_file(dir_ / "cut.gz", idx_bytes(1, {4000}, std::vector<uint8_t>(4000, 9)), true);
  auto size = fs::file_size(dir_ / "cut.gz");
  fs::resize_file(dir_ / "cut.gz", size / 2);
  EXPECT_THROW(read_idx((dir_ / "cut.gz").string()), IoError);
}

// Found by fuzz_idx: dimensions whose product overflows int64 (UBSan: signed overflow), and a header claiming
// gigabytes over a file of a few bytes (memory must follow the data, not the claim).
TEST_F(IdxTest, RejectsDimensionsThatOverflowOrClaimMoreThanTheFileHolds) {
  write_file(dir_ / "overflow", idx_bytes(3, {0x00030000, 0x00029ca9, 0xb6c39000}, {1, 2}), false);
  EXPECT_THROW(read_idx((dir_ / "overflow").string()), FormatError);
  write_file(dir_ / "claims", idx_bytes(2, {60000, 65536}, {1, 2, 3}), false);  // 3.9 GB claimed, 3 bytes there
  EXPECT_THROW(read_idx((dir_ / "claims").string()), IoError);
}

TEST_F(IdxTest, FashionMnistLoaderChecksCountsAndPreprocesses) {
  std::vector<uint8_t> pixels(2 * 28 * 28, 255);
  pixels[0] = 0;
  write_file(dir_ / "t10k-images-idx3-ubyte.gz", idx_bytes(3, {2, 28, 28}, pixels), true);
  write_file(dir_ / "t10k-labels-idx1-ubyte", idx_bytes(1, {2}, {3, 9}), false);
  LabeledImages d = load_fashion_mnist(dir_.string(), Split::kTest);
  ASSERT_EQ(d.images.shape(), Shape({2, 1, 32, 32}));
  EXPECT_EQ(d.labels, (std::vector<int64_t>{3, 9}));
  EXPECT_FLOAT_EQ(d.images.data()[0], -1.0f);            // padding
  EXPECT_FLOAT_EQ(d.images.data()[2 * 32 + 2], -1.0f);   // pixel value 0
  EXPECT_FLOAT_EQ(d.images.data()[2 * 32 + 3], 1.0f);    // pixel value 255
  write_file(dir_ / "t10k-labels-idx1-ubyte", idx_bytes(1, {3}, {3, 9, 1}), false);
  EXPECT_THROW(load_fashion_mnist(dir_.string(), Split::kTest), FormatError);
  EXPECT_THROW(load_fashion_mnist(dir_.string(), Split::kTrain), IoError);
}

TEST(FashionMnist, ReadsTheInstalledTestSplit) {
  if (!fs::exists(LCDKIT_FASHION_MNIST_DIR)) GTEST_SKIP() << "dataset-fashion-mnist not installed";
  LabeledImages d = load_fashion_mnist(LCDKIT_FASHION_MNIST_DIR, Split::kTest);
  ASSERT_EQ(d.images.size(0), 10000);
  std::vector<int> counts(10);
  for (int64_t y : d.labels) counts[y]++;
  for (int c : counts) EXPECT_EQ(c, 1000);  // the test split is balanced
}

}  // namespace
}  // namespace lcd
