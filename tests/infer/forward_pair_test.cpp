// UNet2DConditionModel::forward_pair (classifier-free guidance's two passes, the layers before the first
// cross-attention run once per sample) against the plain forward of the doubled batch, as diffusers batches
// it: forward(concat(x, x), t ++ t, concat(first, second)). Two tiny configs: the first down block with
// cross-attention (the rows double inside it; the skip of conv_in is paired later) and without (the whole
// first block, its skips and temb run once per sample). Batches that run whole and ones cut into parts
// (odd sizes give uneven parts), with and without a tape, in fp32 and (where the CPU has it) bf16.
#include <gtest/gtest.h>

#include "autograd/cpu/precision.h"
#include "autograd/errors.h"
#include "autograd/ops.h"
#include "autograd/random.h"
#include "infer/nn/unet.h"
#include "tests/infer/golden.h"
#include "tests/tiny_unet_config.h"
#include "tests/train/tiny_model.h"

namespace lcd {
namespace {

struct Pair {
  std::unique_ptr<UNet2DConditionModel> unet;
  Tensor x, first, second;
  std::vector<double> t;

  Pair(const nlohmann::json& cfg, int64_t batch) {
    unet = std::make_unique<UNet2DConditionModel>(UNetConfig::from_json(cfg, "tiny"));
    testing::randomize_module(*unet, 31, 0.2f);
    Rng rng(32);
    x = rng.normal_tensor({batch, 2, 4, 4});
    first = rng.normal_tensor({batch, 3, 6});
    second = rng.normal_tensor({batch, 3, 6});
    for (int64_t i = 0; i < batch; ++i) t.push_back(static_cast<double>((37 * i + 11) % 1000));
  }
  // forward(xx, t ++ t, [first; second]), xx = [x; x] unless given (a leaf of its own, for its gradient)
  Tensor doubled(Tensor xx = Tensor()) const {
    if (!xx.defined()) xx = concat(std::vector<Tensor>{x, x}, 0);
    std::vector<double> t2 = t;
    t2.insert(t2.end(), t.begin(), t.end());
    return unet->forward(xx, t2, concat(std::vector<Tensor>{first, second}, 0));
  }
  Tensor paired() const { return unet->forward_pair(x, t, first, second); }
};

nlohmann::json first_block_without_attention() {
  nlohmann::json cfg = testing::tiny_unet_config();
  cfg["down_block_types"] = {"DownBlock2D", "CrossAttnDownBlock2D"};
  cfg["up_block_types"] = {"CrossAttnUpBlock2D", "UpBlock2D"};
  return cfg;
}

// Each kernel computes a row the same way whatever the batch around it on the CPUs tried (the results came out
// bit for bit equal), but a CPU's kernels may cut rows differently at another batch size: float32 gets a few
// roundings of room (1e-5 of the largest value), bf16 the effect of an operand rounded the other way (2e-3).
// A row under the wrong condition or sample differs by the order of the values themselves.
void expect_pair_matches(const nlohmann::json& cfg, Precision precision) {
  PrecisionGuard p(precision);
  const double tol = precision == Precision::kBf16 ? 2e-3 : 1e-5;
  for (int64_t batch : {1, 3, 16, 17, 40}) {  // 16 and more: cut into parts (2·batch rows ≥ 32)
    Pair f(cfg, batch);
    NoGradGuard no_grad;
    const Tensor want = f.doubled(), got = f.paired();
    testing::expect_whole_tensor_close(got, want, tol, "batch " + std::to_string(batch) + ", " + precision_name(precision));
  }
}

TEST(UNetForwardPair, MatchesTheDoubledBatchWhenTheFirstBlockHasCrossAttention) {
  expect_pair_matches(testing::tiny_unet_config(), Precision::kFp32);
  if (bf16_supported()) expect_pair_matches(testing::tiny_unet_config(), Precision::kBf16);
}

TEST(UNetForwardPair, MatchesTheDoubledBatchWhenTheFirstBlockHasNone) {
  expect_pair_matches(first_block_without_attention(), Precision::kFp32);
  if (bf16_supported()) expect_pair_matches(first_block_without_attention(), Precision::kBf16);
}

TEST(UNetForwardPair, OnATapeGradientsReachTheSampleThroughBothHalves) {
  PrecisionGuard p(Precision::kFp32);
  Pair f(testing::tiny_unet_config(), 3);
  f.x.set_requires_grad(true);
  const Tensor got = f.paired();
  testing::expect_whole_tensor_close(got, [&] { NoGradGuard g; return f.doubled(); }(), 1e-5, "output on a tape");
  sum(mul(got, got)).backward();
  const Tensor grad_pair = f.x.grad();
  // The doubled batch's gradient: the two copies of x each get their half's gradient, summed.
  Tensor xx = concat(std::vector<Tensor>{f.x.detach(), f.x.detach()}, 0);
  xx.set_requires_grad(true);
  const Tensor out = f.doubled(xx);
  sum(mul(out, out)).backward();
  const Tensor g2 = xx.grad();  // (2B, C, H, W)
  const Tensor want = add(slice(g2, 0, 0, 3), slice(g2, 0, 3, 3));
  testing::expect_whole_tensor_close(grad_pair, want, 1e-5, "gradient of the sample");
}

TEST(UNetForwardPair, RefusesConditionsOfDifferentShapes) {
  Pair f(testing::tiny_unet_config(), 2);
  NoGradGuard no_grad;
  EXPECT_THROW(f.unet->forward_pair(f.x, f.t, f.first, slice(f.second, 1, 0, 2)), ShapeError);
  EXPECT_THROW(f.unet->forward_pair(f.x, {1.0}, f.first, f.second), ShapeError);
}

}  // namespace
}  // namespace lcd
