// Exact and truncated LoRA arithmetic (DESIGN.md §5, §7; reference/lora-merge.md §3–§6), in float64.
//   combine_cat: ΔW = Σ λ_i s_i B_i A_i exactly, as one adapter of rank Σ r_i (A stacked, λ_i s_i B_i stacked,
//     alpha = rank so the scale is 1).
//   combine_svd: the same sum truncated to rank k without ever forming ΔW: with U = [λ_i s_i B_i] (out × R) and
//     V = [A_i] (R × in), QR gives U = Q_u R_u and Vᵀ = Q_v R_v, so ΔW = Q_u (R_u R_vᵀ) Q_vᵀ; the SVD of the
//     R × R core gives ΔW's singular values and vectors. Memory is O((out + in)·R) per module.
//   extract: the best rank-k LoRA of W_tuned − W_base per module (SVD of the difference).
// Every truncation reports the relative Frobenius error ‖ΔW − ΔW_k‖/‖ΔW‖ = √(Σ_{i>k} σ_i²)/√(Σ σ_i²).
#pragma once
#include <string>
#include <vector>

#include "infer/lora.h"

namespace lcd {

struct WeightedAdapter {
  const LoraAdapter* adapter;
  double weight;
  std::string origin;  // file name, for errors
};

struct TruncationReport {
  struct Module {
    std::string name;
    int64_t rank_in, rank_out;
    double norm, error;  // ‖ΔW‖_F and ‖ΔW − ΔW_k‖_F
  };
  std::vector<Module> modules;
  double total_norm() const;   // √Σ‖ΔW‖²
  double total_error() const;  // √Σ‖ΔW − ΔW_k‖²
};

// The exact weighted sum. Throws FormatError naming both files when a module's shapes disagree.
LoraAdapter combine_cat(const std::vector<WeightedAdapter>& inputs);

// The weighted sum truncated per module to `rank` (> 0), or to the smallest rank keeping `energy` (0 < energy ≤ 1)
// of Σσ² when rank is 0.
LoraAdapter combine_svd(const std::vector<WeightedAdapter>& inputs, int64_t rank, double energy, TruncationReport* report);

// Rank-`rank` LoRA of tuned − base for the given (name, base weight, tuned weight) triples; modules whose
// difference is exactly zero are left out.
LoraAdapter extract_lora(const std::vector<std::tuple<std::string, Tensor, Tensor>>& weights, int64_t rank,
                         TruncationReport* report);

// ‖scale · B A‖_F, from the r × r Gram matrices (no out × in product).
double lora_delta_norm(const LoraFactors& f, double weight = 1.0);

}  // namespace lcd
