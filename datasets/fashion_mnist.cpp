// Fashion-MNIST loader: idx files → padded, scaled image tensors and labels.
#include "datasets/fashion_mnist.h"

#include <filesystem>

#include "autograd/errors.h"
#include "datasets/idx.h"

namespace lcd {

static std::string find_idx(const std::string& dir, const std::string& stem) {
  for (const std::string& name : {stem + ".gz", stem}) {
    const std::string path = (std::filesystem::path(dir) / name).string();
    if (std::filesystem::exists(path)) return path;
  }
  throw IoError(dir + ": no " + stem + "(.gz) (install Debian's dataset-fashion-mnist or set the dataset path)");
}

void pad_and_scale_28_to_32(const uint8_t* src, float* dst) {
  for (int i = 0; i < 32; ++i)
    for (int j = 0; j < 32; ++j) {
      const bool inside = i >= 2 && i < 30 && j >= 2 && j < 30;
      dst[i * 32 + j] = inside ? src[(i - 2) * 28 + (j - 2)] / 127.5f - 1.0f : -1.0f;
    }
}

LabeledImages load_fashion_mnist(const std::string& dir, Split split, int64_t limit) {
  const std::string prefix = split == Split::kTrain ? "train" : "t10k";
  const std::string image_path = find_idx(dir, prefix + "-images-idx3-ubyte");
  const std::string label_path = find_idx(dir, prefix + "-labels-idx1-ubyte");
  IdxArray images = read_idx(image_path);
  IdxArray labels = read_idx(label_path);
  if (images.dims.size() != 3 || images.dims[1] != 28 || images.dims[2] != 28)
    throw FormatError(image_path + ": expected (N, 28, 28) images");
  if (labels.dims.size() != 1) throw FormatError(label_path + ": expected a rank-1 label array");
  if (images.dims[0] != labels.dims[0])
    throw FormatError(image_path + " has " + std::to_string(images.dims[0]) + " images but " + label_path + " has " +
                      std::to_string(labels.dims[0]) + " labels");
  const int64_t n = limit < 0 ? images.dims[0] : std::min<int64_t>(limit, images.dims[0]);
  LabeledImages out{Tensor::empty({n, 1, 32, 32}), std::vector<int64_t>(n)};
  for (int64_t i = 0; i < n; ++i) {
    pad_and_scale_28_to_32(images.data.data() + i * 28 * 28, out.images.data() + i * 32 * 32);
    out.labels[i] = labels.data[i];
    if (out.labels[i] > 9) throw FormatError(label_path + ": label " + std::to_string(out.labels[i]) + " is not 0..9");
  }
  return out;
}

}  // namespace lcd
