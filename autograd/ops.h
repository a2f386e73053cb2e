// The differentiable ops of the autograd core, one file each under autograd/ops/ (DESIGN.md §8.1).
// Every op is templated on the scalar: float for real work, double for the finite-difference checks.
// Inputs that do not require a gradient get no gradient work in backward.
#pragma once
#include <cstdint>
#include <vector>

#include "autograd/tape.h"
#include "autograd/tensor.h"

namespace lcd {

// ---- elementwise, with NumPy broadcasting ----
template <typename T> TensorT<T> add(const TensorT<T>& a, const TensorT<T>& b);
template <typename T> TensorT<T> sub(const TensorT<T>& a, const TensorT<T>& b);
template <typename T> TensorT<T> mul(const TensorT<T>& a, const TensorT<T>& b);
template <typename T> TensorT<T> div(const TensorT<T>& a, const TensorT<T>& b);
// y = factor * x + shift
template <typename T> TensorT<T> scale(const TensorT<T>& x, double factor, double shift = 0.0);
template <typename T> TensorT<T> exp(const TensorT<T>& x);
template <typename T> TensorT<T> log(const TensorT<T>& x);
template <typename T> TensorT<T> sqrt(const TensorT<T>& x);
template <typename T> TensorT<T> pow(const TensorT<T>& x, double exponent);
template <typename T> TensorT<T> abs(const TensorT<T>& x);
template <typename T> TensorT<T> silu(const TensorT<T>& x);
enum class GeluApproximation { kNone, kTanh };  // exact erf form, or the tanh form
template <typename T> TensorT<T> gelu(const TensorT<T>& x, GeluApproximation approximation = GeluApproximation::kNone);
// GEGLU on a (..., 2·inner) projection: first half · gelu(second half) → (..., inner), exact GELU
template <typename T> TensorT<T> geglu(const TensorT<T>& projected);

// ---- reductions ----
template <typename T> TensorT<T> sum(const TensorT<T>& x, const std::vector<int>& axes, bool keepdim = false);
template <typename T> TensorT<T> sum(const TensorT<T>& x);  // all elements, rank-0 result
// mean = sum / count (a composition, not a separate op)
template <typename T> TensorT<T> mean(const TensorT<T>& x, const std::vector<int>& axes, bool keepdim = false);
template <typename T> TensorT<T> mean(const TensorT<T>& x);
// softmax over the last axis
template <typename T> TensorT<T> softmax(const TensorT<T>& x);

// ---- linear algebra ----
template <typename T> TensorT<T> matmul(const TensorT<T>& a, const TensorT<T>& b);  // (M,K)x(K,N)
template <typename T> TensorT<T> bmm(const TensorT<T>& a, const TensorT<T>& b);     // (B,M,K)x(B,K,N)
// x (..., in), weight (out, in), optional bias (out): y = x Wᵀ + b
template <typename T> TensorT<T> linear(const TensorT<T>& x, const TensorT<T>& weight, const TensorT<T>& bias);
struct Conv2dOptions {
  int stride = 1;
  int padding = 0;        // zeros on every side
  int extra_pad_end = 0;  // further zeros on the bottom and right only (diffusers' Downsample2D with padding 0)
};
// x (N,Cin,H,W), weight (Cout,Cin,kh,kw), optional bias (Cout) → (N,Cout,Ho,Wo); im2col + one GEMM
template <typename T>
TensorT<T> conv2d(const TensorT<T>& x, const TensorT<T>& weight, const TensorT<T>& bias, Conv2dOptions options = {});
// conv2d plus one LoRA branch, y = conv2d(x, W, b) + scale · conv2d(conv2d(x, down), up), with down (r,Cin,kh,kw)
// and up (Cout,r,1,1); one im2col serves both (ops/conv2d_lora.cpp)
template <typename T>
TensorT<T> conv2d_lora(const TensorT<T>& x, const TensorT<T>& weight, const TensorT<T>& bias, const TensorT<T>& down,
                       const TensorT<T>& up, double scale, Conv2dOptions options = {});
// linear plus one LoRA branch fused in, y = x Wᵀ + b + scale · (x downᵀ) upᵀ, down (r, in), up (out, r)
template <typename T>
TensorT<T> linear_lora(const TensorT<T>& x, const TensorT<T>& weight, const TensorT<T>& bias, const TensorT<T>& down,
                       const TensorT<T>& up, double scale);
// Channels-last convolution: x (N,H,W,Cin), weight (Cout,Cin,kh,kw) as diffusers stores it, optional bias (Cout)
// → (N,Ho,Wo,Cout); the layout the models run in (ops/conv2d_nhwc.cpp)
template <typename T>
TensorT<T> conv2d_nhwc(const TensorT<T>& x, const TensorT<T>& weight, const TensorT<T>& bias, Conv2dOptions options = {});
// conv2d_nhwc plus one LoRA branch, as conv2d_lora (down (r,Cin,kh,kw), up (Cout,r,1,1))
template <typename T>
TensorT<T> conv2d_nhwc_lora(const TensorT<T>& x, const TensorT<T>& weight, const TensorT<T>& bias,
                            const TensorT<T>& down, const TensorT<T>& up, double scale, Conv2dOptions options = {});
// Multi-head scaled-dot-product attention. q (B,Lq,C), k (B,Lk,C), v (B,Lk,Cv); head h uses channels
// [h·C/heads, (h+1)·C/heads) as diffusers splits them; scale defaults to 1/√(C/heads). → (B,Lq,Cv)
template <typename T>
TensorT<T> attention(const TensorT<T>& q, const TensorT<T>& k, const TensorT<T>& v, int heads, double scale = 0.0);

// ---- normalisation (gamma/beta may be undefined: no affine transform) ----
// x (N,C,...) with C divisible by groups
template <typename T>
TensorT<T> group_norm(const TensorT<T>& x, int groups, const TensorT<T>& gamma, const TensorT<T>& beta, double eps);
// channels-last x (N, ..., C) with C divisible by groups, optionally followed by SiLU in the same pass
template <typename T>
TensorT<T> group_norm_nhwc(const TensorT<T>& x, int groups, const TensorT<T>& gamma, const TensorT<T>& beta, double eps,
                           bool silu);
// over the last axis
template <typename T>
TensorT<T> layer_norm(const TensorT<T>& x, const TensorT<T>& gamma, const TensorT<T>& beta, double eps);

// ---- shape ----
template <typename T> TensorT<T> reshape(const TensorT<T>& x, const Shape& shape);  // a view; one -1 allowed via vector
template <typename T> TensorT<T> reshape(const TensorT<T>& x, const std::vector<int64_t>& shape);
template <typename T> TensorT<T> permute(const TensorT<T>& x, const std::vector<int>& order);
template <typename T> TensorT<T> transpose(const TensorT<T>& x, int axis0, int axis1);  // via permute
template <typename T> TensorT<T> concat(const std::vector<TensorT<T>>& xs, int axis);
// x narrowed to [start, start+length) along axis (a copy)
template <typename T> TensorT<T> slice(const TensorT<T>& x, int axis, int64_t start, int64_t length);
template <typename T> std::vector<TensorT<T>> split(const TensorT<T>& x, const std::vector<int64_t>& sizes, int axis);
template <typename T> std::vector<TensorT<T>> chunk(const TensorT<T>& x, int chunks, int axis);
// (N,C,H,W) → (N,C,2H,2W), nearest neighbour
template <typename T> TensorT<T> upsample_nearest2x(const TensorT<T>& x);
// (N,H,W,C) → (N,2H,2W,C), nearest neighbour
template <typename T> TensorT<T> upsample_nearest2x_nhwc(const TensorT<T>& x);
// table (V,D), indices (n) → (n,D)
template <typename T> TensorT<T> embedding(const TensorT<T>& table, const std::vector<int64_t>& indices);

// ---- losses (rank-0 results) ----
template <typename T> TensorT<T> mse_loss(const TensorT<T>& prediction, const TensorT<T>& target);
// mean(√((p − t)² + c²) − c)
template <typename T> TensorT<T> pseudo_huber_loss(const TensorT<T>& prediction, const TensorT<T>& target, double c);
// logits (N,K), labels in [0,K): mean negative log-likelihood of softmax
template <typename T> TensorT<T> cross_entropy(const TensorT<T>& logits, const std::vector<int64_t>& labels);

// Operators for readability in model code.
template <typename T> inline TensorT<T> operator+(const TensorT<T>& a, const TensorT<T>& b) { return add(a, b); }
template <typename T> inline TensorT<T> operator-(const TensorT<T>& a, const TensorT<T>& b) { return sub(a, b); }
template <typename T> inline TensorT<T> operator*(const TensorT<T>& a, const TensorT<T>& b) { return mul(a, b); }
template <typename T> inline TensorT<T> operator/(const TensorT<T>& a, const TensorT<T>& b) { return div(a, b); }

}  // namespace lcd
