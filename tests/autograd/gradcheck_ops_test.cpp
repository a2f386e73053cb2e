// Finite-difference gradient checks for every differentiable op, in double on tiny shapes, plus the rule
// that an op registered as differentiable without a check fails the run (DESIGN.md §8.1).
#include <gtest/gtest.h>

#include "autograd/op_registry.h"
#include "tests/autograd/gradcheck_util.h"

namespace lcd::testing {

std::set<std::string>& checked_ops() {
  static std::set<std::string> ops;
  return ops;
}

using V = std::vector<TensorD>;

GRADCHECK_TEST(add) {
  expect_gradients_match([](const V& x) { return add(x[0], x[1]); },
                         {random_tensor({2, 3}, 1), random_tensor({2, 3}, 2)}, "same shape");
  expect_gradients_match([](const V& x) { return add(x[0], x[1]); },
                         {random_tensor({2, 3, 4}, 3), random_tensor({3, 1}, 4)}, "broadcast");
}

GRADCHECK_TEST(sub) {
  expect_gradients_match([](const V& x) { return sub(x[0], x[1]); },
                         {random_tensor({2, 1, 4}, 5), random_tensor({3, 4}, 6)}, "broadcast both");
}

GRADCHECK_TEST(mul) {
  expect_gradients_match([](const V& x) { return mul(x[0], x[1]); },
                         {random_tensor({2, 3, 2, 2}, 7), random_tensor({2, 3, 1, 1}, 8)}, "per-channel");
  expect_gradients_match([](const V& x) { return mul(x[0], x[1]); },
                         {random_tensor({3, 4}, 9), random_tensor({3, 4}, 10)}, "same shape");
}

GRADCHECK_TEST(div) {
  expect_gradients_match([](const V& x) { return div(x[0], x[1]); },
                         {random_tensor({2, 3}, 11), positive_tensor({3}, 12)}, "broadcast divisor");
}

GRADCHECK_TEST(scale) {
  expect_gradients_match([](const V& x) { return scale(x[0], -1.7, 0.3); }, {random_tensor({5}, 13)}, "affine");
}

GRADCHECK_TEST(exp) {
  expect_gradients_match([](const V& x) { return exp(x[0]); }, {random_tensor({2, 3}, 14)}, "exp");
}

GRADCHECK_TEST(log) {
  expect_gradients_match([](const V& x) { return log(x[0]); }, {positive_tensor({2, 3}, 15)}, "log");
}

GRADCHECK_TEST(sqrt) {
  expect_gradients_match([](const V& x) { return sqrt(x[0]); }, {positive_tensor({2, 3}, 16)}, "sqrt");
}

GRADCHECK_TEST(pow) {
  expect_gradients_match([](const V& x) { return pow(x[0], 2.5); }, {positive_tensor({2, 3}, 17)}, "pow 2.5");
  expect_gradients_match([](const V& x) { return pow(x[0], -1.0); }, {positive_tensor({4}, 18)}, "pow -1");
}

GRADCHECK_TEST(abs) {
  expect_gradients_match([](const V& x) { return abs(x[0]); }, {random_tensor({3, 3}, 19)}, "abs");
}

GRADCHECK_TEST(silu) {
  expect_gradients_match([](const V& x) { return silu(x[0]); }, {random_tensor({2, 5}, 20)}, "silu");
}

GRADCHECK_TEST(gelu) {
  expect_gradients_match([](const V& x) { return gelu(x[0]); }, {random_tensor({2, 5}, 21)}, "erf");
  expect_gradients_match([](const V& x) { return gelu(x[0], GeluApproximation::kTanh); }, {random_tensor({2, 5}, 22)},
                         "tanh");
}

GRADCHECK_TEST(sum) {
  expect_gradients_match([](const V& x) { return sum(x[0], {1}, false); }, {random_tensor({2, 3, 4}, 23)}, "axis 1");
  expect_gradients_match([](const V& x) { return sum(x[0], {0, 2}, true); }, {random_tensor({2, 3, 4}, 24)},
                         "axes 0,2 keepdim");
  expect_gradients_match([](const V& x) { return mean(x[0]); }, {random_tensor({2, 3}, 25)}, "mean (composite)");
}

GRADCHECK_TEST(softmax) {
  expect_gradients_match([](const V& x) { return softmax(x[0]); }, {random_tensor({3, 5}, 26)}, "rows");
}

GRADCHECK_TEST(matmul) {
  expect_gradients_match([](const V& x) { return matmul(x[0], x[1]); },
                         {random_tensor({3, 4}, 27), random_tensor({4, 2}, 28)}, "(3,4)x(4,2)");
  expect_gradients_match([](const V& x) { return matmul(x[0], x[1]); },
                         {random_tensor({3, 3}, 29), random_tensor({3, 3}, 30)}, "square");
}

GRADCHECK_TEST(bmm) {
  expect_gradients_match([](const V& x) { return bmm(x[0], x[1]); },
                         {random_tensor({2, 3, 4}, 31), random_tensor({2, 4, 2}, 32)}, "batched");
}

GRADCHECK_TEST(linear) {
  expect_gradients_match([](const V& x) { return linear(x[0], x[1], x[2]); },
                         {random_tensor({2, 3, 4}, 33), random_tensor({5, 4}, 34), random_tensor({5}, 35)}, "bias");
  expect_gradients_match([](const V& x) { return linear(x[0], x[1], TensorD()); },
                         {random_tensor({3, 4}, 36), random_tensor({2, 4}, 37)}, "no bias");
}

GRADCHECK_TEST(conv2d) {
  auto conv = [](Conv2dOptions o) {
    return [o](const V& x) { return conv2d(x[0], x[1], x[2], o); };
  };
  expect_gradients_match(conv({1, 1}), {random_tensor({2, 3, 5, 5}, 38), random_tensor({4, 3, 3, 3}, 39),
                                        random_tensor({4}, 40)}, "3x3 pad 1");
  expect_gradients_match(conv({2, 1}), {random_tensor({2, 2, 6, 5}, 41), random_tensor({3, 2, 3, 3}, 42),
                                        random_tensor({3}, 43)}, "3x3 stride 2");
  expect_gradients_match(conv({1, 0}), {random_tensor({2, 3, 3, 4}, 44), random_tensor({5, 3, 1, 1}, 45),
                                        random_tensor({5}, 46)}, "1x1");
  expect_gradients_match([](const V& x) { return conv2d(x[0], x[1], TensorD(), Conv2dOptions{1, 2}); },
                         {random_tensor({1, 2, 3, 3}, 47), random_tensor({2, 2, 2, 3}, 48)}, "2x3 pad 2 no bias");
  expect_gradients_match(conv({2, 0, 1}), {random_tensor({1, 2, 4, 4}, 75), random_tensor({2, 2, 3, 3}, 76),
                                           random_tensor({2}, 77)}, "stride 2, bottom/right padding only");
}

GRADCHECK_TEST(conv2d_lora) {
  auto lora = [](Conv2dOptions o, double s) {
    return [o, s](const V& x) { return conv2d_lora(x[0], x[1], x[2], x[3], x[4], s, o); };
  };
  expect_gradients_match(lora({1, 1}, 0.7), {random_tensor({2, 3, 5, 5}, 80), random_tensor({4, 3, 3, 3}, 81),
                                             random_tensor({4}, 82), random_tensor({2, 3, 3, 3}, 83),
                                             random_tensor({4, 2, 1, 1}, 84)}, "3x3 pad 1, rank 2");
  expect_gradients_match(lora({2, 1}, 1.5), {random_tensor({2, 2, 6, 5}, 85), random_tensor({3, 2, 3, 3}, 86),
                                             random_tensor({3}, 87), random_tensor({1, 2, 3, 3}, 88),
                                             random_tensor({3, 1, 1, 1}, 89)}, "3x3 stride 2, rank 1");
  expect_gradients_match([](const V& x) { return conv2d_lora(x[0], x[1], TensorD(), x[2], x[3], 0.5, Conv2dOptions{}); },
                         {random_tensor({2, 3, 3, 4}, 90), random_tensor({5, 3, 1, 1}, 91),
                          random_tensor({2, 3, 1, 1}, 92), random_tensor({5, 2, 1, 1}, 93)}, "1x1 no bias");
}

GRADCHECK_TEST(linear_lora) {
  expect_gradients_match([](const V& x) { return linear_lora(x[0], x[1], x[2], x[3], x[4], 0.7); },
                         {random_tensor({2, 3, 4}, 300), random_tensor({5, 4}, 301), random_tensor({5}, 302),
                          random_tensor({2, 4}, 303), random_tensor({5, 2}, 304)}, "rank 2, bias");
  expect_gradients_match([](const V& x) { return linear_lora(x[0], x[1], TensorD(), x[2], x[3], -1.5); },
                         {random_tensor({3, 4}, 305), random_tensor({2, 4}, 306), random_tensor({1, 4}, 307),
                          random_tensor({2, 1}, 308)}, "rank 1, no bias");
}

GRADCHECK_TEST(conv2d_nhwc) {
  auto conv = [](Conv2dOptions o) {
    return [o](const V& x) { return conv2d_nhwc(x[0], x[1], x[2], o); };
  };
  expect_gradients_match(conv({1, 1}), {random_tensor({2, 5, 5, 3}, 310), random_tensor({4, 3, 3, 3}, 311),
                                        random_tensor({4}, 312)}, "3x3 pad 1");
  expect_gradients_match(conv({2, 1}), {random_tensor({2, 6, 5, 2}, 313), random_tensor({3, 2, 3, 3}, 314),
                                        random_tensor({3}, 315)}, "3x3 stride 2");
  expect_gradients_match(conv({1, 0}), {random_tensor({2, 3, 4, 3}, 316), random_tensor({5, 3, 1, 1}, 317),
                                        random_tensor({5}, 318)}, "1x1");
  expect_gradients_match(conv({2, 0, 1}), {random_tensor({1, 5, 4, 2}, 319), random_tensor({2, 2, 3, 3}, 320),
                                           random_tensor({2}, 321)}, "3x3 stride 2, padding on the end only");
}

GRADCHECK_TEST(conv2d_nhwc_lora) {
  auto lora = [](Conv2dOptions o, double s) {
    return [o, s](const V& x) { return conv2d_nhwc_lora(x[0], x[1], x[2], x[3], x[4], s, o); };
  };
  expect_gradients_match(lora({1, 1}, 0.7), {random_tensor({2, 5, 5, 3}, 330), random_tensor({4, 3, 3, 3}, 331),
                                             random_tensor({4}, 332), random_tensor({2, 3, 3, 3}, 333),
                                             random_tensor({4, 2, 1, 1}, 334)}, "3x3 pad 1, rank 2");
  expect_gradients_match(lora({2, 1}, 1.5), {random_tensor({2, 6, 5, 2}, 335), random_tensor({3, 2, 3, 3}, 336),
                                             random_tensor({3}, 337), random_tensor({1, 2, 3, 3}, 338),
                                             random_tensor({3, 1, 1, 1}, 339)}, "3x3 stride 2, rank 1");
  expect_gradients_match([](const V& x) { return conv2d_nhwc_lora(x[0], x[1], TensorD(), x[2], x[3], 0.5, Conv2dOptions{}); },
                         {random_tensor({2, 3, 4, 3}, 340), random_tensor({5, 3, 1, 1}, 341),
                          random_tensor({2, 3, 1, 1}, 342), random_tensor({5, 2, 1, 1}, 343)}, "1x1 no bias");
}

GRADCHECK_TEST(group_norm_nhwc) {
  expect_gradients_match([](const V& x) { return group_norm_nhwc(x[0], 2, x[1], x[2], 1e-5, false); },
                         {random_tensor({2, 3, 2, 4}, 350), random_tensor({4}, 351), random_tensor({4}, 352)}, "affine");
  expect_gradients_match([](const V& x) { return group_norm_nhwc(x[0], 3, x[1], x[2], 1e-6, true); },
                         {random_tensor({2, 5, 6}, 353), random_tensor({6}, 354), random_tensor({6}, 355)}, "with silu");
  expect_gradients_match([](const V& x) { return group_norm_nhwc(x[0], 1, TensorD(), TensorD(), 1e-5, true); },
                         {random_tensor({3, 2, 2, 2}, 356)}, "no affine, one group");
}

GRADCHECK_TEST(geglu) {
  expect_gradients_match([](const V& x) { return geglu(x[0]); }, {random_tensor({2, 3, 8}, 357)}, "rows of 4");
  expect_gradients_match([](const V& x) { return geglu(x[0]); }, {random_tensor({5, 38}, 358)}, "odd inner 19");
}

GRADCHECK_TEST(upsample_nearest2x_nhwc) {
  expect_gradients_match([](const V& x) { return upsample_nearest2x_nhwc(x[0]); }, {random_tensor({2, 2, 3, 3}, 359)},
                         "2x3 image, 3 channels");
}

GRADCHECK_TEST(attention) {
  expect_gradients_match([](const V& x) { return attention(x[0], x[1], x[2], 2); },
                         {random_tensor({2, 3, 4}, 49), random_tensor({2, 5, 4}, 50), random_tensor({2, 5, 6}, 51)},
                         "cross, 2 heads");
  expect_gradients_match([](const V& x) { return attention(x[0], x[0], x[0], 1); }, {random_tensor({1, 4, 3}, 52)},
                         "self, 1 head, shared input");
}

GRADCHECK_TEST(group_norm) {
  expect_gradients_match([](const V& x) { return group_norm(x[0], 2, x[1], x[2], 1e-5); },
                         {random_tensor({2, 4, 3, 3}, 53), random_tensor({4}, 54, true, 1.0), random_tensor({4}, 55)},
                         "affine");
  expect_gradients_match([](const V& x) { return group_norm(x[0], 3, TensorD(), TensorD(), 1e-5); },
                         {random_tensor({2, 6, 2}, 56)}, "no affine");
}

GRADCHECK_TEST(layer_norm) {
  expect_gradients_match([](const V& x) { return layer_norm(x[0], x[1], x[2], 1e-5); },
                         {random_tensor({2, 3, 5}, 57), random_tensor({5}, 58, true, 1.0), random_tensor({5}, 59)},
                         "affine");
}

GRADCHECK_TEST(reshape) {
  expect_gradients_match([](const V& x) { return mul(reshape(x[0], std::vector<int64_t>{3, -1}), x[1]); },
                         {random_tensor({2, 6}, 60), random_tensor({3, 4}, 61)}, "view");
}

GRADCHECK_TEST(permute) {
  expect_gradients_match([](const V& x) { return permute(x[0], {2, 0, 1}); }, {random_tensor({2, 3, 4}, 62)},
                         "(2,0,1)");
  expect_gradients_match([](const V& x) { return transpose(x[0], 0, 1); }, {random_tensor({3, 2}, 63)},
                         "transpose (composite)");
}

GRADCHECK_TEST(concat) {
  expect_gradients_match([](const V& x) { return concat(V{x[0], x[1]}, 1); },
                         {random_tensor({2, 3, 2}, 64), random_tensor({2, 1, 2}, 65)}, "axis 1");
}

GRADCHECK_TEST(slice) {
  expect_gradients_match([](const V& x) { return slice(x[0], 1, 1, 2); }, {random_tensor({2, 4, 3}, 66)}, "middle");
  expect_gradients_match(
      [](const V& x) {
        auto parts = chunk(x[0], 2, -1);
        return mul(parts[0], parts[1]);  // the GEGLU pattern
      },
      {random_tensor({2, 6}, 67)}, "chunk (composite)");
}

GRADCHECK_TEST(upsample_nearest2x) {
  expect_gradients_match([](const V& x) { return upsample_nearest2x(x[0]); }, {random_tensor({1, 2, 2, 3}, 68)},
                         "2x");
}

GRADCHECK_TEST(embedding) {
  expect_gradients_match([](const V& x) { return embedding(x[0], {2, 0, 2}); }, {random_tensor({3, 2, 2}, 69)},
                         "repeated rows");
}

GRADCHECK_TEST(mse_loss) {
  expect_gradients_match([](const V& x) { return mse_loss(x[0], x[1]); },
                         {random_tensor({2, 3}, 70), random_tensor({2, 3}, 71)}, "both sides");
}

GRADCHECK_TEST(pseudo_huber_loss) {
  expect_gradients_match([](const V& x) { return pseudo_huber_loss(x[0], x[1], 0.1); },
                         {random_tensor({2, 3}, 72), random_tensor({2, 3}, 73)}, "c 0.1");
}

GRADCHECK_TEST(cross_entropy) {
  expect_gradients_match([](const V& x) { return cross_entropy(x[0], {1, 0, 3}); }, {random_tensor({3, 4}, 74)},
                         "3 samples");
}

TEST(Gradcheck, EveryDifferentiableOpHasACheck) {
  const auto ops = differentiable_ops();
  ASSERT_FALSE(ops.empty()) << "no op registered itself: is lcd_autograd linked whole?";
  for (const auto& op : ops) EXPECT_TRUE(checked_ops().count(op)) << "differentiable op '" << op << "' has no gradient check";
}

}  // namespace lcd::testing
