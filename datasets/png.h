// PNG reading and writing through libpng. Reading accepts 8- and 16-bit gray, gray+alpha, RGB, RGBA and
// palette images and converts them to the requested channel count (1: luminance, 3: RGB; alpha is dropped
// by compositing over black), with their text chunks. Writing is 8-bit gray or RGB with text chunks (tEXt for
// ASCII values, iTXt for other UTF-8: what A1111's `parameters` and ComfyUI's chunks use), atomically.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "autograd/tensor.h"

namespace lcd {

struct Image8 {
  int width = 0, height = 0, channels = 0;  // channels 1 or 3
  std::vector<uint8_t> pixels;              // row-major, interleaved
  std::vector<std::pair<std::string, std::string>> text;  // text chunks: keyword (1–79 Latin-1 bytes), value
};

Image8 read_png(const std::string& path, int channels);  // throws IoError / FormatError naming the file
void write_png(const std::string& path, const Image8& image);

// Images (N, C, H, W) in [-1, 1] (C = 1 or 3) tiled into a grid with `columns` columns and a 2-pixel gray
// border; values are clamped and mapped to 0..255.
Image8 image_grid(const Tensor& images, int columns);
// One image of a batch as 8-bit pixels.
Image8 image_at(const Tensor& images, int64_t index);

}  // namespace lcd
