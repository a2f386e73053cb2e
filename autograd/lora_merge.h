// Merged LoRA weights formed ahead. A LoRA layer on a frozen weight (linear_lora, conv2d_nhwc_lora) runs its
// no-grad forward and its input gradient with the merged weight W + s·B·A in the kernels' layouts
// (autograd/ops/row_gemm.cpp), formed the first time the layer meets new factor values and kept, two sets of
// factors per layer, while they last. In a batch-parallel pass the first part to reach a layer forms it and
// the other parts wait for it. A trainer's factors change at every step, so it forms them here instead, ahead
// of the pass and every layer at once, the layers shared among the threads. The same sets hold the one form
// of the factors that is not a merge: a k×k stride-1 layer's down factor A as the tap matrix of its
// down-projection (H = X ⊛ A by taps, row_gemm.cpp's down_by_taps), formed ahead alike.
#pragma once
#include <vector>

#include "autograd/tensor.h"

namespace lcd {

// A layer's frozen weight ((out, in) or (out, in, kh, kw)) and the factors it is about to run with: down A
// (r, in[, kh, kw]), up B (out, r[, 1, 1]), scale s.
struct LoraMergeSite {
  Tensor weight, down, up;
  double scale = 1.0;
};

// For each site, forms the merged weight of its current factor values in the layouts its layer was asked
// for under the factors these replace (nothing on a layer's first use: those forms are made on demand).
// Results do not change: a merged form is only read by a call whose factors match, bit for bit, the
// values it was formed from; a site whose weight is trainable or not a module parameter is skipped.
void merge_lora_ahead(const std::vector<LoraMergeSite>& sites);

// How many forms (merged weights and tap matrices) merge_lora_ahead has made in this process, and how many the
// layers have made on demand, at a call that found none (for tests).
int64_t lora_forms_merged_ahead();
int64_t lora_forms_merged_on_demand();

}  // namespace lcd
