// Latent caches, the batcher, PNG reading of every colour type, and image folders, with fixtures written here.
#include <gtest/gtest.h>
#include <png.h>

#include <filesystem>
#include <fstream>
#include <set>

#include "autograd/errors.h"
#include "datasets/batcher.h"
#include "datasets/hdf5.h"
#include "datasets/image_folder.h"
#include "datasets/latent_cache.h"
#include "datasets/png.h"
#include "datasets/style.h"

namespace lcd {
namespace {

namespace fs = std::filesystem;

class DatasetsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("lcdkit_ds_" + std::to_string(::getpid()));
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string path(const std::string& n) const { return (dir_ / n).string(); }
  fs::path dir_;
};

// A PNG of any colour type and bit depth, written with libpng directly (independent of datasets/png.cpp).
void write_raw_png(const std::string& path, int w, int h, int color_type, int depth, const std::vector<uint8_t>& rows_bytes,
                   const std::vector<png_color>& palette = {}) {
  FILE* f = fopen(path.c_str(), "wb");
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, nullptr, nullptr, nullptr);
  png_infop info = png_create_info_struct(png);
  png_init_io(png, f);
  png_set_IHDR(png, info, w, h, depth, color_type, PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  if (!palette.empty()) png_set_PLTE(png, info, palette.data(), static_cast<int>(palette.size()));
  png_write_info(png, info);
  const size_t stride = rows_bytes.size() / h;
  for (int y = 0; y < h; ++y) png_write_row(png, const_cast<uint8_t*>(rows_bytes.data() + y * stride));
  png_write_end(png, nullptr);
  png_destroy_write_struct(&png, &info);
  fclose(f);
}

TEST_F(DatasetsTest, LatentCacheRoundTripsAndDetectsStaleness) {
  LabeledImages imgs{Tensor::full({3, 1, 4, 4}, 0.5f), {0, 1, 2}};
  int encodes = 0;
  EncodeFn encode = [&](const Tensor& x) {
    ++encodes;
    return std::make_pair(Tensor::full({x.size(0), 2, 2, 2}, 1.5f), Tensor::full({x.size(0), 2, 2, 2}, -1.0f));
  };
  LatentCacheInfo info{0.5, "test:train", 3, "hashA"};
  const std::string p = path("cache.h5");
  LatentCache a = load_or_build_latent_cache(p, info, [&] { return imgs; }, encode, 2);
  EXPECT_EQ(encodes, 2);  // batches of 2 over 3 images
  EXPECT_FLOAT_EQ(a.latents.data()[0], 0.75f);  // mean × scaling_factor
  LatentCache b = load_or_build_latent_cache(p, info, [&] { return imgs; }, encode, 2);
  EXPECT_EQ(encodes, 2) << "a fresh cache must be reused";
  EXPECT_EQ(b.labels, a.labels);
  EXPECT_EQ(b.latents.shape(), Shape({3, 2, 2, 2}));
  EXPECT_FLOAT_EQ(b.logvar.data()[5], -1.0f);
  info.autoencoder_hash = "hashB";  // another autoencoder: stale
  load_or_build_latent_cache(p, info, [&] { return imgs; }, encode, 2);
  EXPECT_EQ(encodes, 4);
  EXPECT_EQ(read_latent_cache_info(p).autoencoder_hash, "hashB");
}

TEST_F(DatasetsTest, LatentCacheWithWrongShapeOrMissingPartsIsAnError) {
  {
    Hdf5File f = Hdf5File::create(path("bad.h5"));
    f.write("/latents", Tensor::zeros({2, 4, 8}));
    f.write("/labels", std::vector<int64_t>{0, 1});
    for (const char* k : {"source", "autoencoder_hash"}) f.set_attribute("/", k, std::string("x"));
    f.set_attribute("/", "scaling_factor", 1.0);
    f.set_attribute("/", "source_size", int64_t(2));
  }
  EXPECT_THROW(read_latent_cache(path("bad.h5")), FormatError);
  { Hdf5File f = Hdf5File::create(path("noattr.h5")); f.write("/labels", std::vector<int64_t>{0}); }
  EXPECT_THROW(read_latent_cache(path("noattr.h5")), FormatError);
  std::ofstream(path("junk.h5")) << "not hdf5";
  EXPECT_THROW(read_latent_cache(path("junk.h5")), IoError);
}

TEST(Batcher, SeededEpochPermutationsAreReproducibleAndCoverTheData) {
  Batcher a(10, 3, 42), b(10, 3, 42), c(10, 3, 43);
  std::set<int64_t> seen;
  bool differs = false;
  for (int i = 0; i < 3; ++i) {  // one epoch: 3 batches of 3, one sample dropped
    auto x = a.next(), y = b.next(), z = c.next();
    EXPECT_EQ(x, y);
    differs |= x != z;
    seen.insert(x.begin(), x.end());
  }
  EXPECT_EQ(seen.size(), 9u);
  EXPECT_TRUE(differs);
  auto next_epoch = a.next();
  EXPECT_EQ(a.epoch(), 1);
  Batcher resumed(10, 3, 42);
  resumed.restore(1, 0);
  EXPECT_EQ(resumed.next(), next_epoch);
}

TEST(Batcher, ShardsAreDisjoint) {
  Batcher r0(12, 2, 7, 0, 2), r1(12, 2, 7, 1, 2);
  std::set<int64_t> s0, s1;
  for (int i = 0; i < 3; ++i) {
    for (int64_t v : r0.next()) s0.insert(v);
    for (int64_t v : r1.next()) s1.insert(v);
  }
  for (int64_t v : s0) EXPECT_EQ(s1.count(v), 0u);
  EXPECT_EQ(s0.size() + s1.size(), 12u);
  EXPECT_THROW(Batcher(3, 2, 1, 0, 2), ValueError);
}

TEST_F(DatasetsTest, PngReadsEveryColourTypeAndDepth) {
  // 2×1 images: pixel values chosen so gray conversion is exact.
  write_raw_png(path("g8.png"), 2, 1, PNG_COLOR_TYPE_GRAY, 8, {0, 255});
  write_raw_png(path("g16.png"), 2, 1, PNG_COLOR_TYPE_GRAY, 16, {0, 0, 255, 255});
  write_raw_png(path("ga.png"), 2, 1, PNG_COLOR_TYPE_GRAY_ALPHA, 8, {0, 255, 255, 255});
  write_raw_png(path("rgb.png"), 2, 1, PNG_COLOR_TYPE_RGB, 8, {0, 0, 0, 255, 255, 255});
  write_raw_png(path("rgba.png"), 2, 1, PNG_COLOR_TYPE_RGBA, 8, {0, 0, 0, 255, 255, 255, 255, 255});
  write_raw_png(path("pal.png"), 2, 1, PNG_COLOR_TYPE_PALETTE, 8, {0, 1}, {{0, 0, 0}, {255, 255, 255}});
  for (const char* f : {"g8.png", "g16.png", "ga.png", "rgb.png", "rgba.png", "pal.png"}) {
    Image8 gray = read_png(path(f), 1);
    ASSERT_EQ(gray.channels, 1) << f;
    EXPECT_EQ(gray.pixels[0], 0) << f;
    EXPECT_EQ(gray.pixels[1], 255) << f;
    Image8 rgb = read_png(path(f), 3);
    EXPECT_EQ(rgb.pixels.size(), 6u) << f;
    EXPECT_EQ(rgb.pixels[5], 255) << f;
  }
  std::ofstream(path("fake.png")) << "GIF89a";
  EXPECT_THROW(read_png(path("fake.png"), 1), FormatError);
  EXPECT_THROW(read_png(path("none.png"), 1), IoError);
}

TEST_F(DatasetsTest, ImageFoldersFromSubfoldersAndLabelFilesWithTheFittingRule) {
  fs::create_directories(dir_ / "set/3");
  fs::create_directories(dir_ / "set/7");
  write_png(path("set/3/a.png"), Image8{28, 28, 1, std::vector<uint8_t>(28 * 28, 255), {}});
  write_png(path("set/7/b.png"), Image8{28, 28, 1, std::vector<uint8_t>(28 * 28, 0), {}});
  ImageFolder f = load_image_folder(path("set"), {1, 32, ""});
  ASSERT_EQ(f.data.labels, (std::vector<int64_t>{3, 7}));
  EXPECT_FLOAT_EQ(f.data.images.data()[0], -1.0f);             // padding
  EXPECT_FLOAT_EQ(f.data.images.data()[2 * 32 + 2], 1.0f);     // inside, white
  // 64×64 → 32×32 by 2×2 box averaging.
  std::vector<uint8_t> checker(64 * 64);
  for (int i = 0; i < 64 * 64; ++i) checker[i] = ((i / 64) % 2) ? 255 : 0;
  write_png(path("big.png"), Image8{64, 64, 1, checker, {}});
  std::ofstream(path("labels.txt")) << "# file label\nbig.png,4\n";
  ImageFolder g = load_image_folder(dir_.string(), {1, 32, path("labels.txt")});
  EXPECT_EQ(g.data.labels, (std::vector<int64_t>{4}));
  EXPECT_NEAR(g.data.images.data()[0], 0.0f, 1e-6);  // mean of 0 and 255 → the middle of [-1, 1]
  // Mismatched sizes and unfittable sizes are errors naming the file.
  write_png(path("set/7/c.png"), Image8{20, 28, 1, std::vector<uint8_t>(20 * 28, 0), {}});
  EXPECT_THROW(load_image_folder(path("set"), {1, 32, ""}), FormatError);
  write_png(path("odd.png"), Image8{40, 40, 1, std::vector<uint8_t>(1600, 0), {}});
  std::ofstream(path("labels2.txt")) << "odd.png 1\n";
  EXPECT_THROW(load_image_folder(dir_.string(), {1, 32, path("labels2.txt")}), FormatError);
  std::ofstream(path("labels3.txt")) << "odd.png\n";
  EXPECT_THROW(load_image_folder(dir_.string(), {1, 32, path("labels3.txt")}), FormatError);
}

}  // namespace
}  // namespace lcd

namespace lcd {
namespace {

TEST(Style, InvertAndThickenDoWhatTheySay) {
  Tensor x = Tensor::full({1, 1, 5, 5}, -1.0f);
  x.data()[12] = 1.0f;  // one white pixel in the middle
  Tensor inv = apply_style(x, "invert");
  EXPECT_FLOAT_EQ(inv.data()[0], 1.0f);
  EXPECT_FLOAT_EQ(inv.data()[12], -1.0f);
  Tensor thick = apply_style(x, "thicken");
  int white = 0;
  for (int64_t i = 0; i < 25; ++i) white += thick.data()[i] == 1.0f;
  EXPECT_EQ(white, 9);  // the 3×3 neighbourhood
  EXPECT_FLOAT_EQ(thick.data()[0], -1.0f);
  EXPECT_THROW(apply_style(x, "sepia"), ValueError);
}

}  // namespace
}  // namespace lcd
