// Image folder reader (see image_folder.h).
#include "datasets/image_folder.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "autograd/errors.h"
#include "datasets/png.h"

namespace lcd {

namespace fs = std::filesystem;

namespace {

bool is_png(const fs::path& p) {
  std::string ext = p.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), ::tolower);
  return ext == ".png";
}

bool all_digits(const std::string& s) { return !s.empty() && std::all_of(s.begin(), s.end(), ::isdigit); }

// Fits one image to size×size floats in [-1, 1] (see the rule in image_folder.h).
void fit(const Image8& img, int size, const std::string& file, float* out) {
  const int c = img.channels;
  std::fill(out, out + static_cast<size_t>(c) * size * size, -1.0f);
  if (img.width <= size && img.height <= size) {
    const int x0 = (size - img.width) / 2, y0 = (size - img.height) / 2;
    for (int ch = 0; ch < c; ++ch)
      for (int y = 0; y < img.height; ++y)
        for (int x = 0; x < img.width; ++x)
          out[(static_cast<size_t>(ch) * size + y0 + y) * size + x0 + x] =
              img.pixels[(static_cast<size_t>(y) * img.width + x) * c + ch] / 127.5f - 1.0f;
    return;
  }
  const int k = img.width / size;
  if (img.width != k * size || img.height != k * size)
    throw FormatError(file + ": a " + std::to_string(img.width) + "x" + std::to_string(img.height) +
                      " image cannot be fitted to " + std::to_string(size) + "x" + std::to_string(size) +
                      " (smaller images are padded, exact multiples are downsampled)");
  for (int ch = 0; ch < c; ++ch)
    for (int y = 0; y < size; ++y)
      for (int x = 0; x < size; ++x) {
        double acc = 0;
        for (int dy = 0; dy < k; ++dy)
          for (int dx = 0; dx < k; ++dx) acc += img.pixels[(static_cast<size_t>(y * k + dy) * img.width + x * k + dx) * c + ch];
        out[(static_cast<size_t>(ch) * size + y) * size + x] = static_cast<float>(acc / (k * k) / 127.5 - 1.0);
      }
}

}  // namespace

ImageFolder load_image_folder(const std::string& dir, const ImageFolderOptions& o) {
  if (!fs::is_directory(dir)) throw IoError(dir + ": not a folder");
  ImageFolder result;
  std::vector<std::pair<std::string, int64_t>> items;  // (path, label)
  if (!o.labels_file.empty()) {
    std::ifstream in(o.labels_file);
    if (!in) throw IoError(o.labels_file + ": cannot open labels file");
    std::string line;
    for (int lineno = 1; std::getline(in, line); ++lineno) {
      if (line.empty() || line[0] == '#') continue;
      std::replace(line.begin(), line.end(), ',', ' ');
      std::istringstream fields(line);
      std::string file;
      int64_t label;
      if (!(fields >> file >> label) || label < 0)
        throw FormatError(o.labels_file + ":" + std::to_string(lineno) + ": expected \"file label\", got \"" + line + "\"");
      items.emplace_back((fs::path(dir) / file).string(), label);
    }
    int64_t max_label = -1;
    for (auto& [f, l] : items) max_label = std::max(max_label, l);
    for (int64_t k = 0; k <= max_label; ++k) result.class_names.push_back(std::to_string(k));
  } else {
    std::vector<std::string> classes;
    for (const auto& e : fs::directory_iterator(dir))
      if (e.is_directory()) classes.push_back(e.path().filename().string());
    std::sort(classes.begin(), classes.end());
    if (classes.empty()) throw FormatError(dir + ": no class sub-folders (or give a labels file)");
    const bool numeric = std::all_of(classes.begin(), classes.end(), all_digits);
    if (numeric) {
      std::sort(classes.begin(), classes.end(), [](auto& a, auto& b) { return std::stol(a) < std::stol(b); });
      result.class_names.resize(std::stol(classes.back()) + 1);
    }
    for (size_t k = 0; k < classes.size(); ++k) {
      const int64_t label = numeric ? std::stol(classes[k]) : static_cast<int64_t>(k);
      if (numeric) result.class_names[label] = classes[k];
      else result.class_names.push_back(classes[k]);
      std::vector<std::string> files;
      for (const auto& e : fs::directory_iterator(fs::path(dir) / classes[k]))
        if (e.is_regular_file() && is_png(e.path())) files.push_back(e.path().string());
      std::sort(files.begin(), files.end());
      for (auto& f : files) items.emplace_back(f, label);
    }
  }
  if (items.empty()) throw FormatError(dir + ": no PNG images found");

  const int64_t n = static_cast<int64_t>(items.size());
  result.data.images = Tensor::empty({n, o.channels, o.size, o.size});
  int width = -1, height = -1;
  std::string first;
  for (int64_t i = 0; i < n; ++i) {
    const Image8 img = read_png(items[i].first, o.channels);
    if (width < 0) {
      width = img.width;
      height = img.height;
      first = items[i].first;
    } else if (img.width != width || img.height != height) {
      throw FormatError(items[i].first + ": image is " + std::to_string(img.width) + "x" + std::to_string(img.height) +
                        " but " + first + " is " + std::to_string(width) + "x" + std::to_string(height) +
                        " (all images must have one size)");
    }
    fit(img, o.size, items[i].first, result.data.images.data() + i * o.channels * o.size * o.size);
    result.data.labels.push_back(items[i].second);
    result.files.push_back(items[i].first);
  }
  return result;
}

}  // namespace lcd
