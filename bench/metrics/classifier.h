// The quality metric's network: a Fashion-MNIST classifier trained with lcdkit's own autograd
// (bench/train_classifier.cpp, weights in bench/classifier/). Its 128-d penultimate features give an FID
// against the test images, and its argmax the class accuracy of conditional samples.
#pragma once
#include <string>
#include <vector>

#include "infer/nn/layers.h"

namespace lcd {

class FmnistClassifier : public Module {
 public:
  FmnistClassifier();
  // images (N, 1, 32, 32) in [-1, 1] → logits (N, 10); *features, if given, receives the (N, 128) penultimate layer.
  Tensor forward(const Tensor& images, Tensor* features = nullptr) const;
  void randomize(uint64_t seed);  // PyTorch-style uniform(±1/√fan_in) weights, unit norms

  Conv2d c1, c2, c3, c4;
  GroupNorm n1, n2, n3, n4;
  Linear fc1, fc2;
};

// Runs the classifier over images (N, 1, 32, 32) in chunks of 500, without a tape and always in fp32: the
// predicted class of each image, and its penultimate features (N, 128) when `features` is given.
std::vector<int64_t> classify(const FmnistClassifier& net, const Tensor& images, Tensor* features = nullptr);

// Loads bench/classifier/fmnist_classifier.safetensors (or the given file), strictly.
void load_classifier(FmnistClassifier& net, const std::string& path);
std::string default_classifier_path();

}  // namespace lcd
