// Batch parallelism (autograd/batch_parallel.h) against the one-tape, op-parallel computation of the same
// step: a no-grad UNet forward cut into parts equals the uncut forward; the LCD and diffusion gradients
// summed from parallel parts equal those of one backward over the whole batch; and every result is the same,
// bit for bit, on one thread and on two (part sizes depend on the batch only).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

#include "autograd/batch_parallel.h"
#include "autograd/lora_merge.h"
#include "autograd/random.h"
#include "autograd/threads.h"
#include "tests/infer/golden.h"
#include "tests/tiny_unet_config.h"
#include "tests/train/tiny_model.h"
#include "train/diffusion_objective.h"
#include "train/lcd_objective.h"

namespace lcd {
namespace {

using testing::expect_whole_tensor_close;
using testing::randomize_module;
using testing::tiny_unet_config;

constexpr int64_t kBatch = 48;  // three parts

struct Fixture {
  UNet2DConditionModel unet{UNetConfig::from_json(tiny_unet_config(6), "tiny")};
  NoiseSchedule schedule = NoiseSchedule::scaled_linear(1000, 0.00085, 0.012);
  Rng rng{5};
  Fixture() { randomize_module(unet, 9, 0.2f); }
  Tensor sample() { return rng.normal_tensor({kBatch, 2, 8, 8}); }
  Tensor context() { return rng.normal_tensor({kBatch, 3, 6}); }
};

std::vector<float> values(const Tensor& t) { return std::vector<float>(t.data(), t.data() + t.numel()); }

LoraSettings rank_4() {
  LoraSettings ls;
  ls.rank = 4;
  ls.alpha = 4;
  return ls;
}

// New online factor values, as an optimiser step writes them (B = 0 at creation: this also makes it non-zero).
void nudge_online(TrainableLora& lora, Rng& rng) {
  for (int64_t i = 0; i < lora.online().size(); ++i) lora.online().values()[i] += 0.05f * float(rng.normal());
}

// A batch of kBatch samples for the LCD step: random latents, noise and contexts, grid points and guidance.
LcdBatch lcd_batch(Fixture& f) {
  LcdBatch b;
  b.z0 = f.sample();
  b.eps = f.sample();
  b.cond = f.context();
  b.uncond = f.context();
  for (int64_t i = 0; i < kBatch; ++i) {
    b.j.push_back(static_cast<int>(f.rng.uniform_int(50)));
    b.guidance.push_back(1.0 + 4.0 * f.rng.uniform());
  }
  return b;
}

// The gradients summed from the parts equal one backward's within rounding (the parts' sums run in another order),
// and are not all zero (expect_whole_tensor_close passes zeros).
void expect_gradients_close(const std::vector<float>& parts, const std::vector<float>& whole, const std::string& what) {
  const Shape n{static_cast<int64_t>(whole.size())};
  expect_whole_tensor_close(Tensor::from_vector(n, parts), Tensor::from_vector(n, whole), 1e-4, what);
  double scale = 0;
  for (float v : whole) scale = std::max(scale, double(std::abs(v)));
  EXPECT_GT(scale, 1e-6) << what << ": the test needs non-zero gradients";
}

TEST(BatchParallel, PartsDependOnTheBatchOnly) {
  EXPECT_EQ(batch_parts(8).count, 1);
  EXPECT_EQ(batch_parts(32).count, 2);
  EXPECT_EQ(batch_parts(64).count, 4);
  EXPECT_EQ(batch_parts(1000).count, 8);
  for (int64_t n : {1, 17, 31, 32, 47, 64, 129, 1000}) {
    const BatchParts p = batch_parts(n);
    EXPECT_GE(p.size * p.count, n);
    EXPECT_LT(p.size * (p.count - 1), n) << n;
  }
}

TEST(BatchParallel, NoGradForwardInPartsEqualsTheUncutForward) {
  Fixture f;
  const Tensor x = f.sample(), c = f.context();
  std::vector<double> t;
  for (int64_t i = 0; i < kBatch; ++i) t.push_back(37.0 * i);
  const ThreadCountGuard thread_count(2);
  NoGradGuard no_grad;
  ASSERT_TRUE(splits_batch(kBatch));
  const Tensor cut = f.unet.forward(x, t, c);
  std::vector<Tensor> rows;
  for (int64_t i = 0; i < kBatch; i += 16)  // parts of the same size, one at a time
    rows.push_back(f.unet.forward(slice(x, 0, i, 16), std::vector<double>(t.begin() + i, t.begin() + i + 16), slice(c, 0, i, 16)));
  // The parts' GEMMs are cut into other chunks than a lone batch of 16 (row_gemm.h), so equal within rounding.
  expect_whole_tensor_close(cut, concat(rows, 0), 1e-6, "batch cut into parts");
  set_num_threads(1);
  EXPECT_EQ(values(f.unet.forward(x, t, c)), values(cut)) << "one thread";
}

TEST(BatchParallel, LcdGradientsFromPartsEqualOneBackward) {
  Fixture f;
  TrainableLora lora(f.unet, rank_4(), f.rng);
  nudge_online(lora, f.rng);
  const LcdBatch b = lcd_batch(f);
  const LcdSettings settings;
  const ThreadCountGuard thread_count(2);
  // One tape over the whole batch.
  lora.online().zero_grad();
  LcdStep whole = lcd_forward(f.unet, lora, f.schedule, settings, b);
  whole.loss.backward();
  const std::vector<float> g_whole(lora.online().grads(), lora.online().grads() + lora.online().size());
  // Parallel parts, on two threads and on one.
  std::vector<std::vector<float>> g_parts;
  std::vector<double> losses;
  for (int threads : {2, 1}) {
    set_num_threads(threads);
    lora.online().zero_grad();
    const LcdLosses l = lcd_loss_and_gradients(f.unet, lora, f.schedule, settings, b);
    losses.push_back(l.loss);
    g_parts.emplace_back(lora.online().grads(), lora.online().grads() + lora.online().size());
    EXPECT_NEAR(l.loss_huber, whole.loss_huber.item(), 1e-6 * std::abs(whole.loss_huber.item()));
    EXPECT_NEAR(l.loss_l2, whole.loss_l2.item(), 1e-5 * std::abs(whole.loss_l2.item()));
  }
  EXPECT_NEAR(losses[0], whole.loss.item(), 1e-6 * std::abs(whole.loss.item()));
  EXPECT_EQ(g_parts[0], g_parts[1]) << "one thread and two give the same bits";
  expect_gradients_close(g_parts[0], g_whole, "LCD gradients of the parts against one backward");
}

// The LCD step forms the merged LoRA weights of its target (EMA) and student (online) factors ahead of their
// passes (TrainableLora::use): after a first step has asked for them on demand, a step with new values of both
// forms every one ahead and none on demand. A layer that only one pass reads (to_k/to_v on the context, which
// needs no input gradient in the student) must keep its set for that pass's next factors.
TEST(BatchParallel, LcdStepsMergeTheirLoraWeightsAhead) {
  Fixture f;
  TrainableLora lora(f.unet, rank_4(), f.rng);
  const LcdBatch b = lcd_batch(f);
  const ThreadCountGuard thread_count(2);
  for (int step = 0; step < 4; ++step) {
    nudge_online(lora, f.rng);
    const int64_t on_demand = lora_forms_merged_on_demand(), ahead = lora_forms_merged_ahead();
    lora.online().zero_grad();
    lcd_loss_and_gradients(f.unet, lora, f.schedule, LcdSettings{}, b);
    lora.update_ema(0.9);
    if (step == 0) continue;
    EXPECT_EQ(lora_forms_merged_on_demand() - on_demand, 0) << "step " << step << ": forms made on demand";
    EXPECT_GT(lora_forms_merged_ahead(), ahead) << "step " << step << ": nothing merged ahead";
  }
}

TEST(BatchParallel, DiffusionGradientsFromPartsEqualOneBackward) {
  Fixture f;
  std::vector<std::pair<std::string, Tensor>> all;
  for (auto& [name, t] : f.unet.named_parameters()) all.emplace_back(name, *t);
  FlatParameters params(all);
  DiffusionBatch b;
  b.z0 = f.sample();
  b.eps = f.sample();
  b.cond = f.context();
  for (int64_t i = 0; i < kBatch; ++i) b.t.push_back(static_cast<int>(f.rng.uniform_int(1000)));
  const ThreadCountGuard thread_count(2);
  params.zero_grad();
  Tensor whole = diffusion_loss(f.unet, f.schedule, b);
  whole.backward();
  const std::vector<float> g_whole(params.grads(), params.grads() + params.size());
  params.zero_grad();
  const double loss = diffusion_loss_and_gradients(f.unet, f.schedule, b, params);
  EXPECT_NEAR(loss, whole.item(), 1e-6 * whole.item());
  expect_gradients_close(std::vector<float>(params.grads(), params.grads() + params.size()), g_whole,
                         "diffusion gradients of the parts against one backward");
}

TEST(BatchParallel, AnExceptionInAPartReachesTheCaller) {
  const ThreadCountGuard thread_count(2);
  EXPECT_THROW(for_each_part(64, [](int64_t begin, int64_t) {
                 if (begin > 0) throw std::runtime_error("part failed");
               }),
               std::runtime_error);
}

}  // namespace
}  // namespace lcd
