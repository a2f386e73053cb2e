// Image folders: PNG files with labels from class sub-folders (dir/<class>/*.png; integer folder names are
// the labels, other names are numbered in sorted order) or from a labels file (lines "file label" or
// "file,label", files relative to the folder). Images are converted to the requested channel count and fitted
// to size×size by one rule: every image must have the same size; smaller images are centred on black
// (padding like Fashion-MNIST's 28 → 32), images an exact integer multiple of the size are box-averaged down,
// anything else is an error. Pixels are scaled to [-1, 1].
#pragma once
#include <string>
#include <vector>

#include "datasets/fashion_mnist.h"

namespace lcd {

struct ImageFolderOptions {
  int channels = 1;
  int size = 32;
  std::string labels_file;  // empty: class sub-folders
};

struct ImageFolder {
  LabeledImages data;
  std::vector<std::string> class_names;  // index = label
  std::vector<std::string> files;        // in data order
};

ImageFolder load_image_folder(const std::string& dir, const ImageFolderOptions& options);

}  // namespace lcd
