// Inference-only weights (autograd/inference_weights.h): a frozen linear or convolution weight that keeps
// only its forward form gives bit for bit the outputs of its float values, in each precision and for weights
// above and below the size that is otherwise packed per call; every other use fails with an error.
#include <gtest/gtest.h>

#include <utility>

#include "autograd/cpu/precision.h"
#include "autograd/errors.h"
#include "autograd/inference_weights.h"
#include "autograd/ops.h"
#include "autograd/random.h"
#include "autograd/tape.h"

namespace lcd {
namespace {

std::vector<float> values(const Tensor& t) { return std::vector<float>(t.data(), t.data() + t.numel()); }

Tensor parameter(Rng& rng, const Shape& shape) {
  Tensor w = rng.normal_tensor(shape);
  w.impl()->packable = true;  // as a module parameter
  return w;
}

TEST(InferenceWeights, ForwardFormsGiveTheOutputsOfTheFloatWeights) {
  std::vector<Precision> precisions{Precision::kFp32};
  if (bf16_supported()) precisions.push_back(Precision::kBf16);
  for (Precision p : precisions) {
    PrecisionGuard guard(p);
    NoGradGuard no_grad;
    Rng rng(31);
    // 3×3 kernels below and above the 4 MB packed per call (the latter 2.4 M values), a strided one with end
    // padding, a 1×1 kernel and linears (one of 5 MB).
    struct Conv { Shape x, w; Conv2dOptions o; };
    for (const Conv& c : {Conv{{2, 12, 12, 32}, {48, 32, 3, 3}, {1, 1}}, Conv{{1, 10, 10, 512}, {512, 512, 3, 3}, {1, 1}},
                          Conv{{2, 9, 9, 16}, {24, 16, 3, 3}, {2, 0, 1}}, Conv{{2, 7, 7, 40}, {24, 40, 1, 1}, {1, 0}}}) {
      const Tensor x = rng.normal_tensor(c.x), b = rng.normal_tensor({c.w[0]});
      const Tensor w = parameter(rng, c.w);
      const std::vector<float> before = values(conv2d_nhwc(x, w, b, c.o));
      EXPECT_EQ(keep_forward_form_only(w), w.numel() * 4);
      EXPECT_EQ(std::as_const(w).data(), nullptr);
      EXPECT_EQ(keep_forward_form_only(w), 0) << "a second call does nothing";
      EXPECT_EQ(values(conv2d_nhwc(x, w, b, c.o)), before) << precision_name(p) << " conv " << c.w.str();
      EXPECT_EQ(values(conv2d_nhwc(x, w, b, c.o)), before) << precision_name(p) << " conv " << c.w.str() << ", again";
    }
    for (const Shape& s : {Shape{24, 40}, Shape{1280, 1024}}) {
      const Tensor x = rng.normal_tensor({33, s[1]}), b = rng.normal_tensor({s[0]});
      const Tensor w = parameter(rng, s);
      const std::vector<float> before = values(linear(x, w, b));
      keep_forward_form_only(w);
      EXPECT_EQ(values(linear(x, w, b)), before) << precision_name(p) << " linear " << s.str();
    }
  }
}

TEST(InferenceWeights, OtherUsesFailWithAnError) {
  Rng rng(32);
  const Tensor x = rng.normal_tensor({2, 6, 6, 8});
  // Only weights of linears and convolutions; trained ones and tensors that are not module parameters keep
  // their values.
  Tensor trained = parameter(rng, {4, 8, 3, 3});
  trained.set_requires_grad(true);
  EXPECT_EQ(keep_forward_form_only(trained), 0);
  EXPECT_NE(std::as_const(trained).data(), nullptr);
  const Tensor loose = rng.normal_tensor({4, 8, 3, 3});
  EXPECT_EQ(keep_forward_form_only(loose), 0);
  EXPECT_NE(loose.data(), nullptr);
  EXPECT_THROW(keep_forward_form_only(parameter(rng, {4})), ValueError) << "a bias";
  // A forward at another precision, a LoRA branch, a linear's input gradient: each needs the float values.
  Tensor w = parameter(rng, {4, 8, 3, 3});
  keep_forward_form_only(w);
  if (bf16_supported()) {
    PrecisionGuard other(compute_precision() == Precision::kBf16 ? Precision::kFp32 : Precision::kBf16);
    EXPECT_THROW(conv2d_nhwc(x, w, Tensor(), Conv2dOptions{1, 1}), Error);
  }
  {
    NoGradGuard no_grad;
    EXPECT_THROW(conv2d_nhwc_lora(x, w, Tensor(), rng.normal_tensor({2, 8, 3, 3}), rng.normal_tensor({4, 2, 1, 1}), 1.0,
                                  Conv2dOptions{1, 1}),
                 Error);
  }
  Tensor xg = rng.normal_tensor({2, 5});
  xg.set_requires_grad(true);
  Tensor lw = parameter(rng, {3, 5});
  keep_forward_form_only(lw);
  EXPECT_THROW(sum(linear(xg, lw, Tensor())).backward(), Error) << "a linear's input gradient";
  // A write through data() after the values are gone.
  Tensor lin = parameter(rng, {3, 5});
  keep_forward_form_only(lin);
  lin.data();
  EXPECT_THROW(linear(rng.normal_tensor({2, 5}), lin, Tensor()), Error);
}

}  // namespace
}  // namespace lcd
