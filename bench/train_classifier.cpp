// Trains the quality metric's Fashion-MNIST classifier with lcdkit's autograd and writes its weights
// (bench/classifier/fmnist_classifier.safetensors). Run by scripts/train_classifier.sh.
// Usage: train_classifier [OUT] [--epochs E] [--threads N] [--data DIR]
#include <cstdio>
#include <numeric>
#include <string>

#include "autograd/flat_parameters.h"
#include "autograd/random.h"
#include "autograd/threads.h"
#include "bench/metrics/classifier.h"
#include "datasets/batcher.h"
#include "datasets/fashion_mnist.h"
#include "infer/io/safetensors.h"
#include "infer/tools/cli.h"
#include "train/adamw.h"
#include "train/lr_schedule.h"

using namespace lcd;

static double accuracy(const FmnistClassifier& net, const LabeledImages& data) {
  const std::vector<int64_t> predicted = classify(net, data.images);
  int64_t correct = 0;
  for (size_t i = 0; i < predicted.size(); ++i) correct += predicted[i] == data.labels[i];
  return double(correct) / data.images.size(0);
}

int main(int argc, char** argv) {
  return run_tool("train_classifier", [&] {
    std::string out = default_classifier_path(), epochs = "4", threads, data = kDefaultFashionMnistDir;
    ArgParser p("train_classifier", "[OUT] [options]", "Trains the FID feature classifier on Fashion-MNIST.");
    p.positional("OUT", "output safetensors", &out, false);
    p.option("--epochs", "E", "training epochs", &epochs);
    p.threads(&threads);
    p.option("--data", "DIR", "Fashion-MNIST idx folder", &data);
    if (!p.parse(argc, argv)) return 0;
    apply_threads(threads);
    const LabeledImages train = load_fashion_mnist(data, Split::kTrain), test = load_fashion_mnist(data, Split::kTest);
    FmnistClassifier net;
    net.randomize(1);
    std::vector<std::pair<std::string, Tensor>> named;
    for (auto& [name, t] : net.named_parameters()) named.emplace_back(name, *t);
    FlatParameters params(named);
    AdamW opt(params, AdamWConfig{0.9, 0.999, 1e-8, 1e-4});
    const int64_t batch = 128, total = parse_int("--epochs", epochs) * (train.images.size(0) / batch);
    Batcher batcher(train.images.size(0), batch, 7);
    Rng rng(3);
    for (int64_t step = 1; step <= total; ++step) {
      const std::vector<int64_t> idx = batcher.next();
      Tensor x = Tensor::empty({batch, 1, 32, 32});
      std::vector<int64_t> y;
      for (int64_t i = 0; i < batch; ++i) {
        // Random horizontal flips (Fashion-MNIST classes are mirror-symmetric).
        const bool flip = rng.uniform() < 0.5;
        const float* src = train.images.data() + idx[i] * 1024;
        for (int r = 0; r < 32; ++r)
          for (int c = 0; c < 32; ++c) x.data()[i * 1024 + r * 32 + c] = src[r * 32 + (flip ? 31 - c : c)];
        y.push_back(train.labels[idx[i]]);
      }
      params.zero_grad();
      Tensor loss = cross_entropy(net.forward(x), y);
      loss.backward();
      opt.step(learning_rate("cosine", 2e-3, 1e-5, 200, total, step));
      if (step % 200 == 0 || step == total)
        std::fprintf(stderr, "step %lld/%lld loss %.4f\n", static_cast<long long>(step), static_cast<long long>(total), loss.item());
    }
    const double acc = accuracy(net, test);
    std::printf("test accuracy: %.4f on %lld images\n", acc, static_cast<long long>(test.images.size(0)));
    std::vector<SafetensorsTensor> tensors;
    for (auto& [name, t] : net.named_parameters()) tensors.push_back({name, *t});
    write_safetensors(out, tensors, {{"test_accuracy", std::to_string(acc)}, {"trained_by", "bench/train_classifier.cpp"}});
    return 0;
  });
}
