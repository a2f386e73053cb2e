// Fréchet distance between Gaussians fitted to two feature sets (FID, Heusel et al. 2017):
//   d² = ‖μ1 − μ2‖² + tr(Σ1 + Σ2 − 2 (Σ1^{1/2} Σ2 Σ1^{1/2})^{1/2}), in float64.
#pragma once
#include <Eigen/Dense>

#include "autograd/tensor.h"

namespace lcd {

struct FeatureStats {
  Eigen::VectorXd mean;
  Eigen::MatrixXd covariance;  // unbiased (n − 1)
};

FeatureStats feature_stats(const Tensor& features);  // (N, D)
double frechet_distance(const FeatureStats& a, const FeatureStats& b);

}  // namespace lcd
