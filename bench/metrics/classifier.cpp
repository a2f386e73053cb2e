// The Fashion-MNIST classifier of the quality metric (see classifier.h).
#include "bench/metrics/classifier.h"

#include "autograd/cpu/precision.h"

#include <algorithm>
#include <cmath>

#include "autograd/random.h"
#include "infer/io/model_io.h"

namespace lcd {

FmnistClassifier::FmnistClassifier()
    : c1(1, 32, 3, 1, 1), c2(32, 64, 3, 2, 1), c3(64, 64, 3, 2, 1), c4(64, 128, 3, 2, 1),
      n1(8, 32, 1e-5), n2(8, 64, 1e-5), n3(8, 64, 1e-5), n4(8, 128, 1e-5), fc1(128 * 4 * 4, 128), fc2(128, 10) {
  register_module("c1", &c1);
  register_module("n1", &n1);
  register_module("c2", &c2);
  register_module("n2", &n2);
  register_module("c3", &c3);
  register_module("n3", &n3);
  register_module("c4", &c4);
  register_module("n4", &n4);
  register_module("fc1", &fc1);
  register_module("fc2", &fc2);
}

Tensor FmnistClassifier::forward(const Tensor& x, Tensor* features) const {
  Tensor h = n1.forward(c1.forward(permute(x, {0, 2, 3, 1})), true);  // (N, 32, 32, 32) channels-last
  h = n2.forward(c2.forward(h), true);                                // (N, 16, 16, 64)
  h = n3.forward(c3.forward(h), true);                                // (N, 8, 8, 64)
  h = n4.forward(c4.forward(h), true);                                // (N, 4, 4, 128)
  // fc1 was trained on NCHW-flattened features
  Tensor f = silu(fc1.forward(reshape(permute(h, {0, 3, 1, 2}), std::vector<int64_t>{x.size(0), -1})));  // (N, 128)
  if (features) *features = f;
  return fc2.forward(f);
}

void FmnistClassifier::randomize(uint64_t seed) {
  Rng rng(seed);
  auto fill = [&](Tensor& t, int64_t fan_in) {
    const double bound = 1.0 / std::sqrt(static_cast<double>(fan_in));
    for (int64_t i = 0; i < t.numel(); ++i) t.data()[i] = static_cast<float>((2 * rng.uniform() - 1) * bound);
  };
  for (Conv2d* c : {&c1, &c2, &c3, &c4}) {
    fill(c->weight, c->weight.numel() / c->out_channels);
    fill(c->bias, c->weight.numel() / c->out_channels);
  }
  for (Linear* l : {&fc1, &fc2}) {
    fill(l->weight, l->in_features);
    fill(l->bias, l->in_features);
  }
}

std::vector<int64_t> classify(const FmnistClassifier& net, const Tensor& images, Tensor* features) {
  NoGradGuard no_grad;
  PrecisionGuard fp32(Precision::kFp32);  // the metric is the same whatever precision the samples were made in
  std::vector<int64_t> predicted;
  std::vector<Tensor> feats;
  for (int64_t start = 0; start < images.size(0); start += 500) {
    const int64_t m = std::min<int64_t>(500, images.size(0) - start);
    Tensor f;
    Tensor logits = net.forward(slice(images, 0, start, m), features ? &f : nullptr);
    if (features) feats.push_back(f);
    for (int64_t i = 0; i < m; ++i) {
      const float* row = logits.data() + i * 10;
      predicted.push_back(std::max_element(row, row + 10) - row);
    }
  }
  if (features) *features = concat(feats, 0);
  return predicted;
}

std::string default_classifier_path() { return std::string(LCDKIT_SOURCE_DIR) + "/bench/classifier/fmnist_classifier.safetensors"; }

void load_classifier(FmnistClassifier& net, const std::string& path) { load_state_dict(net, SafetensorsFile::read(path)); }

}  // namespace lcd
