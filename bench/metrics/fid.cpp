// Fréchet distance (see fid.h).
#include "bench/metrics/fid.h"

#include "autograd/errors.h"

namespace lcd {

FeatureStats feature_stats(const Tensor& f) {
  if (f.ndim() != 2 || f.size(0) < 2) throw ShapeError("feature_stats needs (N ≥ 2, D) features, got " + f.shape().str());
  const Eigen::MatrixXd x =
      Eigen::Map<const Eigen::Matrix<float, -1, -1, Eigen::RowMajor>>(f.data(), f.size(0), f.size(1)).cast<double>();
  FeatureStats s;
  s.mean = x.colwise().mean().transpose();
  const Eigen::MatrixXd centred = x.rowwise() - s.mean.transpose();
  s.covariance = centred.transpose() * centred / double(x.rows() - 1);
  return s;
}

double frechet_distance(const FeatureStats& a, const FeatureStats& b) {
  // tr((Σ1^{1/2} Σ2 Σ1^{1/2})^{1/2}) = Σ √λ_i of that symmetric PSD matrix.
  Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd> ea(a.covariance);
  const Eigen::MatrixXd sqrt_a =
      ea.eigenvectors() * ea.eigenvalues().cwiseMax(0).cwiseSqrt().asDiagonal() * ea.eigenvectors().transpose();
  Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd> em(sqrt_a * b.covariance * sqrt_a);
  const double tr_sqrt = em.eigenvalues().cwiseMax(0).cwiseSqrt().sum();
  return (a.mean - b.mean).squaredNorm() + a.covariance.trace() + b.covariance.trace() - 2 * tr_sqrt;
}

}  // namespace lcd
