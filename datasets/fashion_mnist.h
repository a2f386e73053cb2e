// Fashion-MNIST from the idx files of Debian's dataset-fashion-mnist, preprocessed as DESIGN.md §3:
// 28×28 padded with 2 zero pixels to 32×32 and scaled to [-1, 1] (so the padding is −1, black).
#pragma once
#include <string>
#include <vector>

#include "autograd/tensor.h"

namespace lcd {

inline const char* kDefaultFashionMnistDir = "/usr/share/datasets/fashion-mnist";

enum class Split { kTrain, kTest };

struct LabeledImages {
  Tensor images;                // (N, 1, 32, 32) in [-1, 1]
  std::vector<int64_t> labels;  // (N) in 0..9
};

// Reads `limit` images (all when limit < 0) of a split from `dir`, trying the .gz names then the plain ones.
LabeledImages load_fashion_mnist(const std::string& dir, Split split, int64_t limit = -1);

// 28×28 bytes → 32×32 floats in [-1, 1]: x/127.5 − 1 inside, −1 in the 2-pixel border.
void pad_and_scale_28_to_32(const uint8_t* src, float* dst);

}  // namespace lcd
