// PNG I/O with libpng (see png.h).
#include "datasets/png.h"

#include <png.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>

#include "autograd/atomic_file.h"
#include "autograd/errors.h"

namespace lcd {

namespace {
struct FileCloser {
  void operator()(FILE* f) const { std::fclose(f); }
};

[[noreturn]] void png_error_to_exception(png_structp png, png_const_charp message) {
  auto* where = static_cast<std::string*>(png_get_error_ptr(png));
  *where = message;
  png_longjmp(png, 1);
}
void png_warning_ignored(png_structp, png_const_charp) {}

uint8_t to_byte(float v) {
  const float x = std::round((std::clamp(v, -1.0f, 1.0f) + 1.0f) * 127.5f);
  return static_cast<uint8_t>(x);
}
}  // namespace

Image8 read_png(const std::string& path, int channels) {
  if (channels != 1 && channels != 3) throw ValueError("read_png: channels must be 1 or 3");
  std::unique_ptr<FILE, FileCloser> f(std::fopen(path.c_str(), "rb"));
  if (!f) throw IoError(path + ": cannot open PNG file");
  unsigned char sig[8];
  if (std::fread(sig, 1, 8, f.get()) != 8 || png_sig_cmp(sig, 0, 8)) throw FormatError(path + ": not a PNG file");
  std::string error;
  png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &error, png_error_to_exception, png_warning_ignored);
  png_infop info = png_create_info_struct(png);
  Image8 img;
  std::vector<png_bytep> rows;
  if (setjmp(png_jmpbuf(png))) {
    png_destroy_read_struct(&png, &info, nullptr);
    throw FormatError(path + ": corrupt PNG (" + error + ")");
  }
  png_init_io(png, f.get());
  png_set_sig_bytes(png, 8);
  png_read_info(png, info);
  png_textp chunks = nullptr;
  const int n_chunks = png_get_text(png, info, &chunks, nullptr);
  for (int i = 0; i < n_chunks; ++i)
    img.text.emplace_back(chunks[i].key, std::string(chunks[i].text, chunks[i].itxt_length ? chunks[i].itxt_length
                                                                                            : chunks[i].text_length));
  // Normalise to 8-bit gray or RGB: expand palettes and low bit depths, strip 16 bits, drop alpha.
  png_set_expand(png);
  png_set_strip_16(png);
  png_color_16 black{};
  png_set_background(png, &black, PNG_BACKGROUND_GAMMA_SCREEN, 0, 1.0);
  const int color = png_get_color_type(png, info);
  const bool is_gray = !(color & PNG_COLOR_MASK_COLOR) && color != PNG_COLOR_TYPE_PALETTE;
  if (channels == 1 && !is_gray) png_set_rgb_to_gray_fixed(png, 1, -1, -1);
  if (channels == 3 && is_gray) png_set_gray_to_rgb(png);
  png_read_update_info(png, info);
  img.width = static_cast<int>(png_get_image_width(png, info));
  img.height = static_cast<int>(png_get_image_height(png, info));
  img.channels = png_get_channels(png, info);
  if (img.channels != channels) {
    png_destroy_read_struct(&png, &info, nullptr);
    throw FormatError(path + ": could not convert to " + std::to_string(channels) + " channels");
  }
  if (static_cast<uint64_t>(img.width) * img.height > (uint64_t{1} << 28)) {
    png_destroy_read_struct(&png, &info, nullptr);
    throw FormatError(path + ": " + std::to_string(img.width) + "×" + std::to_string(img.height) +
                      " pixels is more than lcdkit reads (2^28)");
  }
  img.pixels.resize(static_cast<size_t>(img.width) * img.height * img.channels);
  rows.resize(img.height);
  for (int y = 0; y < img.height; ++y) rows[y] = img.pixels.data() + static_cast<size_t>(y) * img.width * img.channels;
  png_read_image(png, rows.data());
  png_read_end(png, nullptr);
  png_destroy_read_struct(&png, &info, nullptr);
  return img;
}

void write_png(const std::string& path, const Image8& img) {
  for (const auto& [key, value] : img.text)
    if (key.empty() || key.size() > 79) throw ValueError(path + ": PNG text keyword \"" + key + "\" must have 1–79 bytes");
  std::string error, bytes;
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &error, png_error_to_exception, png_warning_ignored);
  png_infop info = png_create_info_struct(png);
  if (setjmp(png_jmpbuf(png))) {
    png_destroy_write_struct(&png, &info);
    throw IoError(path + ": PNG encoding failed (" + error + ")");
  }
  png_set_write_fn(
      png, &bytes,
      [](png_structp p, png_bytep data, png_size_t n) {
        static_cast<std::string*>(png_get_io_ptr(p))->append(reinterpret_cast<const char*>(data), n);
      },
      nullptr);
  png_set_IHDR(png, info, img.width, img.height, 8, img.channels == 1 ? PNG_COLOR_TYPE_GRAY : PNG_COLOR_TYPE_RGB,
               PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  std::vector<png_text> chunks(img.text.size());
  for (size_t i = 0; i < img.text.size(); ++i) {
    const auto& [key, value] = img.text[i];
    const bool ascii = std::all_of(value.begin(), value.end(), [](char ch) { return static_cast<unsigned char>(ch) < 0x80; });
    png_text& t = chunks[i];
    t.compression = ascii ? PNG_TEXT_COMPRESSION_NONE : PNG_ITXT_COMPRESSION_NONE;
    t.key = const_cast<char*>(key.c_str());
    t.text = const_cast<char*>(value.c_str());
    t.text_length = ascii ? value.size() : 0;
    t.itxt_length = ascii ? 0 : value.size();
    t.lang = nullptr;
    t.lang_key = nullptr;
  }
  if (!chunks.empty()) png_set_text(png, info, chunks.data(), static_cast<int>(chunks.size()));
  png_write_info(png, info);
  for (int y = 0; y < img.height; ++y)
    png_write_row(png, const_cast<png_bytep>(img.pixels.data() + static_cast<size_t>(y) * img.width * img.channels));
  png_write_end(png, nullptr);
  png_destroy_write_struct(&png, &info);
  write_file_atomically(path, bytes);
}

Image8 image_at(const Tensor& images, int64_t index) {
  const int c = static_cast<int>(images.size(1)), h = static_cast<int>(images.size(2)), w = static_cast<int>(images.size(3));
  Image8 img{w, h, c, std::vector<uint8_t>(static_cast<size_t>(w) * h * c), {}};
  const float* src = images.data() + index * c * h * w;
  for (int ch = 0; ch < c; ++ch)
    for (int i = 0; i < h * w; ++i) img.pixels[static_cast<size_t>(i) * c + ch] = to_byte(src[ch * h * w + i]);
  return img;
}

Image8 image_grid(const Tensor& images, int columns) {
  if (images.ndim() != 4 || (images.size(1) != 1 && images.size(1) != 3))
    throw ShapeError("image_grid: expected (N, 1 or 3, H, W), got " + images.shape().str());
  const int n = static_cast<int>(images.size(0)), c = static_cast<int>(images.size(1));
  const int h = static_cast<int>(images.size(2)), w = static_cast<int>(images.size(3)), pad = 2;
  columns = std::max(1, std::min(columns, n));
  const int rows = (n + columns - 1) / columns;
  Image8 grid{columns * (w + pad) + pad, rows * (h + pad) + pad, c, {}, {}};
  grid.pixels.assign(static_cast<size_t>(grid.width) * grid.height * c, 128);
  for (int k = 0; k < n; ++k) {
    const Image8 one = image_at(images, k);
    const int x0 = pad + (k % columns) * (w + pad), y0 = pad + (k / columns) * (h + pad);
    for (int y = 0; y < h; ++y)
      std::memcpy(grid.pixels.data() + (static_cast<size_t>(y0 + y) * grid.width + x0) * c,
                  one.pixels.data() + static_cast<size_t>(y) * w * c, static_cast<size_t>(w) * c);
  }
  return grid;
}

}  // namespace lcd
