// Inference-only weights, for tools that run forwards only and at one precision (lcm-sample's UNet and
// decoder): a frozen linear or convolution weight keeps only its forward operand, made once in the process
// precision and in the kernels' layout, and its float32 values are freed. In bf16 that halves the resident
// weights (an SD1.5 UNet: 3.44 → 1.72 GB); in either precision the large weights are no longer packed
// again at every call (autograd/ops/row_gemm.cpp packs weights over 4 MB per call otherwise).
#pragma once
#include <cstdint>

#include "autograd/tensor.h"

namespace lcd {

// `weight`, the weight of a linear ((out, in), also 1×1 convolutions) or a k×k convolution ((out, in, kh, kw)),
// keeps its forward form only where it is a frozen module parameter: data() is null afterwards, and any use
// other than a forward of linear / conv2d_nhwc at this precision (or a k×k convolution's input gradient,
// which reads the same kept form) fails with an Error: a write, a linear's input gradient, a LoRA branch,
// reading the values. A trainable weight or one that is not a module parameter (e.g.
// an adapter's tensor) is left as it is, and so is one already kept. Returns the bytes of float values freed.
int64_t keep_forward_form_only(const Tensor& weight);

}  // namespace lcd
