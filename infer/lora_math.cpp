// LoRA arithmetic (see lora_math.h).
#include "infer/lora_math.h"

#include <Eigen/Dense>
#include <cmath>
#include <map>

#include "autograd/errors.h"

namespace lcd {

using MatD = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

namespace {

MatD to_double(const Tensor& t, int64_t rows) {
  return Eigen::Map<const Eigen::Matrix<float, -1, -1, Eigen::RowMajor>>(t.data(), rows, t.numel() / rows).cast<double>();
}

Tensor to_tensor(const MatD& m, const Shape& shape) {
  Tensor t = Tensor::empty(shape);
  Eigen::Map<Eigen::Matrix<float, -1, -1, Eigen::RowMajor>>(t.data(), m.rows(), m.cols()) = m.cast<float>();
  return t;
}

// The factors' shapes for rank k, given a template module (linear or conv).
Shape down_shape(const LoraFactors& like, int64_t k) {
  std::vector<int64_t> d = like.down.shape().to_vector();
  d[0] = k;
  return Shape(d);
}
Shape up_shape(const LoraFactors& like, int64_t k) {
  std::vector<int64_t> d = like.up.shape().to_vector();
  d[1] = k;
  return Shape(d);
}

// Per module, the inputs that have it, after checking their shapes agree.
std::map<std::string, std::vector<std::pair<const LoraFactors*, const WeightedAdapter*>>> group_modules(
    const std::vector<WeightedAdapter>& inputs) {
  std::map<std::string, std::vector<std::pair<const LoraFactors*, const WeightedAdapter*>>> groups;
  for (const auto& in : inputs)
    for (const auto& [name, f] : in.adapter->modules) {
      auto& g = groups[name];
      if (!g.empty()) {
        const LoraFactors& first = *g.front().first;
        const bool same = first.down.numel() / first.rank() == f.down.numel() / f.rank() &&
                          first.up.size(0) == f.up.size(0) && first.is_conv() == f.is_conv() &&
                          (!f.is_conv() || (first.down.size(2) == f.down.size(2) && first.down.size(3) == f.down.size(3)));
        if (!same)
          throw FormatError("module \"" + name + "\": " + g.front().second->origin + " has down " + first.down.shape().str() +
                            " / up " + first.up.shape().str() + " but " + in.origin + " has down " + f.down.shape().str() +
                            " / up " + f.up.shape().str());
      }
      g.emplace_back(&f, &in);
    }
  return groups;
}

// Stacked factors of a module: U = [λ_i s_i B_i] (out × R), V = [A_i] (R × in_flat).
void stack(const std::vector<std::pair<const LoraFactors*, const WeightedAdapter*>>& g, MatD* u, MatD* v) {
  int64_t total = 0;
  for (auto& [f, in] : g) total += f->rank();
  const int64_t out = g.front().first->up.size(0), in_flat = g.front().first->down.numel() / g.front().first->rank();
  u->resize(out, total);
  v->resize(total, in_flat);
  int64_t at = 0;
  for (auto& [f, in] : g) {
    const int64_t r = f->rank();
    u->middleCols(at, r) = lora_scale(in->weight, f->alpha, r) * to_double(f->up, out);
    v->middleRows(at, r) = to_double(f->down, r);
    at += r;
  }
}

// Keeps the leading singular directions: rank k if > 0, else the smallest k with Σ_{≤k} σ² ≥ energy Σσ².
int64_t choose_rank(const Eigen::VectorXd& sigma, int64_t rank, double energy) {
  const int64_t n = sigma.size();
  if (rank > 0) return std::min<int64_t>(rank, n);
  const double total = sigma.squaredNorm();
  double kept = 0;
  for (int64_t k = 0; k < n; ++k) {
    kept += sigma[k] * sigma[k];
    if (kept >= energy * total) return k + 1;
  }
  return std::max<int64_t>(n, 1);
}

}  // namespace

double TruncationReport::total_norm() const {
  double s = 0;
  for (const auto& m : modules) s += m.norm * m.norm;
  return std::sqrt(s);
}
double TruncationReport::total_error() const {
  double s = 0;
  for (const auto& m : modules) s += m.error * m.error;
  return std::sqrt(s);
}

// Σ λ_i T_i for each whole tensor the inputs carry (exact: whole tensors are never truncated).
std::map<std::string, Tensor> combined_full_weights(const std::vector<WeightedAdapter>& inputs) {
  std::map<std::string, std::vector<double>> sums;
  std::map<std::string, Tensor> out;
  for (const WeightedAdapter& in : inputs)
    for (const auto& [name, t] : in.adapter->full_weights) {
      auto [it, fresh] = sums.try_emplace(name, t.numel(), 0.0);
      if (fresh) out[name] = Tensor::empty(t.shape());
      else if (out[name].shape() != t.shape())
        throw FormatError(in.origin + ": \"" + name + "\" " + t.shape().str() + " differs from the other inputs' " +
                          out[name].shape().str());
      for (int64_t i = 0; i < t.numel(); ++i) it->second[i] += in.weight * t.data()[i];
    }
  for (auto& [name, t] : out)
    for (int64_t i = 0; i < t.numel(); ++i) t.data()[i] = static_cast<float>(sums[name][i]);
  return out;
}

LoraAdapter combine_cat(const std::vector<WeightedAdapter>& inputs) {
  LoraAdapter out;
  out.full_weights = combined_full_weights(inputs);
  for (const auto& [name, g] : group_modules(inputs)) {
    MatD u, v;
    stack(g, &u, &v);
    const LoraFactors& like = *g.front().first;
    const int64_t k = v.rows();
    out.modules[name] = LoraFactors{to_tensor(v, down_shape(like, k)), to_tensor(u, up_shape(like, k)), double(k)};
  }
  return out;
}

LoraAdapter combine_svd(const std::vector<WeightedAdapter>& inputs, int64_t rank, double energy, TruncationReport* report) {
  if (rank < 0 || (rank == 0 && !(energy > 0 && energy <= 1)))
    throw ValueError("svd merge needs --rank R > 0 or --energy F in (0, 1]");
  LoraAdapter out;
  out.full_weights = combined_full_weights(inputs);
  for (const auto& [name, g] : group_modules(inputs)) {
    MatD u, v;
    stack(g, &u, &v);
    // Thin QR of U (out × R) and Vᵀ (in × R); the core R_u R_vᵀ is R × R.
    const int64_t r_total = u.cols();
    Eigen::HouseholderQR<Eigen::MatrixXd> qr_u(u), qr_v(v.transpose());
    const int64_t ku = std::min<int64_t>(u.rows(), r_total), kv = std::min<int64_t>(v.cols(), r_total);
    Eigen::MatrixXd q_u = qr_u.householderQ() * Eigen::MatrixXd::Identity(u.rows(), ku);
    Eigen::MatrixXd q_v = qr_v.householderQ() * Eigen::MatrixXd::Identity(v.cols(), kv);
    Eigen::MatrixXd r_u = qr_u.matrixQR().topRows(ku).triangularView<Eigen::Upper>();
    Eigen::MatrixXd r_v = qr_v.matrixQR().topRows(kv).triangularView<Eigen::Upper>();
    Eigen::BDCSVD<Eigen::MatrixXd> svd(r_u * r_v.transpose(), Eigen::ComputeThinU | Eigen::ComputeThinV);
    const Eigen::VectorXd& sigma = svd.singularValues();
    const int64_t k = std::max<int64_t>(1, choose_rank(sigma, rank, energy));
    // up = Q_u P_k Σ_k (out × k), down = (Q_v Q_k)ᵀ (k × in); alpha = k, so the scale is 1.
    MatD up = q_u * svd.matrixU().leftCols(k) * sigma.head(k).asDiagonal();
    MatD down = (q_v * svd.matrixV().leftCols(k)).transpose();
    const LoraFactors& like = *g.front().first;
    out.modules[name] = LoraFactors{to_tensor(down, down_shape(like, k)), to_tensor(up, up_shape(like, k)), double(k)};
    if (report)
      report->modules.push_back({name, r_total, k, sigma.norm(), sigma.size() > k ? sigma.tail(sigma.size() - k).norm() : 0.0});
  }
  return out;
}

LoraAdapter extract_lora(const std::vector<std::tuple<std::string, Tensor, Tensor>>& weights, int64_t rank,
                         TruncationReport* report) {
  if (rank < 1) throw ValueError("extract needs --rank R ≥ 1");
  LoraAdapter out;
  for (const auto& [name, base, tuned] : weights) {
    if (base.shape() != tuned.shape())
      throw FormatError("module \"" + name + "\": base " + base.shape().str() + " vs tuned " + tuned.shape().str());
    const int64_t rows = base.size(0);
    MatD diff = to_double(tuned, rows) - to_double(base, rows);
    if (diff.squaredNorm() == 0) continue;
    Eigen::BDCSVD<Eigen::MatrixXd> svd(diff, Eigen::ComputeThinU | Eigen::ComputeThinV);
    const Eigen::VectorXd& sigma = svd.singularValues();
    const int64_t k = std::min<int64_t>(rank, sigma.size());
    MatD up = svd.matrixU().leftCols(k) * sigma.head(k).asDiagonal();
    MatD down = svd.matrixV().leftCols(k).transpose();
    std::vector<int64_t> dshape = base.shape().to_vector(), ushape = {rows, k};
    dshape[0] = k;
    if (base.ndim() == 4) ushape = {rows, k, 1, 1};
    out.modules[name] = LoraFactors{to_tensor(down, Shape(dshape)), to_tensor(up, Shape(ushape)), double(k)};
    if (report)
      report->modules.push_back({name, sigma.size(), k, sigma.norm(), sigma.size() > k ? sigma.tail(sigma.size() - k).norm() : 0.0});
  }
  return out;
}

double lora_delta_norm(const LoraFactors& f, double weight) {
  const int64_t r = f.rank();
  MatD a = to_double(f.down, r), b = to_double(f.up, f.up.size(0));
  // ‖B A‖² = tr(Aᵀ Bᵀ B A) = tr((BᵀB)(A Aᵀ))
  const MatD bb = b.transpose() * b, aa = a * a.transpose();
  const double sq = (bb.cwiseProduct(aa.transpose())).sum();
  return std::abs(lora_scale(weight, f.alpha, r)) * std::sqrt(std::max(sq, 0.0));
}

}  // namespace lcd
