// The quality metric: FID against an independent computation (Denman–Beavers square root of Σ1Σ2), and the
// shipped classifier's test accuracy (≥ 90%).
#include <gtest/gtest.h>

#include <filesystem>

#include "bench/metrics/classifier.h"
#include "autograd/random.h"
#include "autograd/tape.h"
#include "bench/metrics/fid.h"
#include "datasets/fashion_mnist.h"

namespace lcd {
namespace {

// tr(√(Σ1 Σ2)) by the Denman–Beavers iteration Y ← ½(Y + Z⁻¹), Z ← ½(Z + Y⁻¹), Y → √A.
double trace_sqrt_product(const Eigen::MatrixXd& a, const Eigen::MatrixXd& b) {
  Eigen::MatrixXd y = a * b, z = Eigen::MatrixXd::Identity(a.rows(), a.cols());
  for (int i = 0; i < 100; ++i) {
    const Eigen::MatrixXd y_next = 0.5 * (y + z.inverse()), z_next = 0.5 * (z + y.inverse());
    y = y_next;
    z = z_next;
  }
  return y.trace();
}

TEST(Fid, MatchesAnIndependentMatrixSquareRoot) {
  Rng rng(4);
  Tensor a = rng.normal_tensor({400, 6}), b = rng.normal_tensor({300, 6});
  for (int64_t i = 0; i < b.numel(); ++i) b.data()[i] = b.data()[i] * (1.0f + 0.3f * (i % 6)) + 0.5f * (i % 3);
  const FeatureStats sa = feature_stats(a), sb = feature_stats(b);
  const double want = (sa.mean - sb.mean).squaredNorm() + sa.covariance.trace() + sb.covariance.trace() -
                      2 * trace_sqrt_product(sa.covariance, sb.covariance);
  EXPECT_NEAR(frechet_distance(sa, sb), want, 1e-8 * std::abs(want));
  EXPECT_NEAR(frechet_distance(sa, sa), 0.0, 1e-9);
  EXPECT_GT(want, 1.0);
}

TEST(Classifier, ShippedWeightsReachNinetyPercentOnTheTestSet) {
  if (!std::filesystem::exists(LCDKIT_FASHION_MNIST_DIR)) GTEST_SKIP() << "dataset-fashion-mnist not installed";
  FmnistClassifier net;
  load_classifier(net, default_classifier_path());
  const LabeledImages test = load_fashion_mnist(LCDKIT_FASHION_MNIST_DIR, Split::kTest);
  const std::vector<int64_t> predicted = classify(net, test.images);
  int64_t correct = 0;
  for (size_t i = 0; i < predicted.size(); ++i) correct += predicted[i] == test.labels[i];
  const double acc = correct / 10000.0;
  std::printf("classifier test accuracy: %.4f\n", acc);
  EXPECT_GE(acc, 0.90);
}

}  // namespace
}  // namespace lcd
