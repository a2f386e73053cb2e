// Batch parallelism (see batch_parallel.h).
#include "autograd/batch_parallel.h"

#include <omp.h>

#include <algorithm>
#include <vector>

#include "autograd/constant_weights.h"
#include "autograd/ops.h"
#include "autograd/parallel.h"
#include "autograd/tape.h"
#include "autograd/threads.h"

namespace lcd {

BatchParts batch_parts(int64_t batch) {
  const int64_t count = std::clamp<int64_t>(batch / 16, 1, 8);
  return {(batch + count - 1) / count, count};
}

namespace {
thread_local bool g_in_part = false;

struct PartScope {
  bool previous = g_in_part;
  PartScope() { g_in_part = true; }
  ~PartScope() { g_in_part = previous; }
};
}  // namespace

bool in_batch_part() { return g_in_part; }

bool splits_batch(int64_t batch) { return batch_parts(batch).count > 1 && !g_in_part && !omp_in_parallel(); }

namespace {
// fn(begin, count) for the parts p of [0, batch), on the threads.
void run_parts(const BatchParts& p, int64_t batch, const std::function<void(int64_t, int64_t)>& fn) {
  const bool grad = grad_enabled();
  FirstException error;
  const int threads = static_cast<int>(std::min<int64_t>(omp_get_max_threads(), p.count));
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
  for (int64_t i = 0; i < p.count; ++i) {
    GradModeGuard mode(grad);
    PartScope part;
    try {
      fn(i * p.size, std::min(p.size, batch - i * p.size));
    } catch (...) {
      error.capture();
    }
  }
  error.rethrow();
}
}  // namespace

void for_each_part(int64_t batch, const std::function<void(int64_t, int64_t)>& fn) {
  if (!splits_batch(batch)) {
    fn(0, batch);
    return;
  }
  run_parts(batch_parts(batch), batch, fn);
}

Tensor map_parts(int64_t batch, const std::function<Tensor(int64_t, int64_t)>& f) {
  NoGradGuard no_grad;
  if (!splits_batch(batch)) return f(0, batch);
  const BatchParts p = batch_parts(batch);
  std::vector<Tensor> parts(p.count);
  for_each_part(batch, [&](int64_t begin, int64_t count) { parts[begin / p.size] = f(begin, count); });
  return concat(parts, 0);
}

Tensor map_pair_parts(int64_t batch, const std::function<Tensor(int64_t, int64_t)>& f) {
  NoGradGuard no_grad;
  if (!splits_batch(2 * batch)) return f(0, batch);
  const int64_t size = (batch_parts(2 * batch).size + 1) / 2;  // samples a part: 2·size rows, as map_parts cuts
  const BatchParts p{size, (batch + size - 1) / size};
  std::vector<Tensor> rows(2 * p.count);  // every part's first rows, then every part's second rows
  run_parts(p, batch, [&](int64_t begin, int64_t count) {
    const Tensor both = f(begin, count);  // (2·count, ...)
    rows[begin / size] = slice(both, 0, 0, count);
    rows[p.count + begin / size] = slice(both, 0, count, count);
  });
  return concat(rows, 0);
}

double parallel_backward(FlatParameters& params, int64_t batch,
                         const std::function<Tensor(int64_t, int64_t)>& part_loss) {
  const BatchParts p = splits_batch(batch) ? batch_parts(batch) : BatchParts{batch, 1};
  ConstantWeightsScope constant;  // the parameters change only after this (the optimiser's update)
  if (p.count == 1) {  // one graph, op-parallel
    Tensor loss = part_loss(0, batch);
    const double value = loss.item();
    loss.backward();
    return value;
  }
  std::vector<int64_t> spans{0};  // each parameter's start: the part buffers are zeroed span by span, when reached
  for (const FlatParameters::Entry& e : params.entries()) spans.push_back(e.offset);
  std::sort(spans.begin(), spans.end());
  spans.erase(std::unique(spans.begin(), spans.end()), spans.end());  // the first parameter starts at 0 too
  std::vector<std::shared_ptr<float>> grads(p.count);
  std::vector<double> losses(p.count);
  for_each_part(batch, [&](int64_t begin, int64_t count) {
    const int64_t i = begin / p.size;
    grads[i] = allocate_storage<float>(params.size(), false);
    GradientRedirect redirect(params.grads(), params.size(), grads[i].get(), spans);
    Tensor loss = part_loss(begin, count);
    losses[i] = loss.item();
    loss.backward();
    redirect.finish();
  });
  // Summed in double and rounded once (or kept unrounded in the wide buffer, for a sum over processes).
  float* g = params.grads();
  double* wide = params.wide_grads();
  const int64_t n = params.size();
  // Block by block of 512 values (4 KiB of double sums in L1), each part's block added as one contiguous
  // vector loop: every value is still g₀ + g₁ + … in part order, in double. (An element-wise loop over the
  // parts did not vectorise: 5% of a bf16 diffusion step at batch 64, AMD EPYC Zen 5.)
  std::vector<const float*> part_grads;
  for (const auto& pg : grads) part_grads.push_back(pg.get());
  parallel_ranges(n, splits_parameter_loop(n), [&](int64_t begin, int64_t end) {
    constexpr int64_t kBlock = 512;
    double s[kBlock];
    for (int64_t b0 = begin; b0 < end; b0 += kBlock) {
      const int64_t len = std::min(kBlock, end - b0);
      const float* first = part_grads[0] + b0;
#pragma omp simd
      for (int64_t j = 0; j < len; ++j) s[j] = first[j];
      for (size_t i = 1; i < part_grads.size(); ++i) {
        const float* part = part_grads[i] + b0;
#pragma omp simd
        for (int64_t j = 0; j < len; ++j) s[j] += part[j];
      }
      if (wide) {
#pragma omp simd
        for (int64_t j = 0; j < len; ++j) wide[b0 + j] += s[j];
      } else {
#pragma omp simd
        for (int64_t j = 0; j < len; ++j) g[b0 + j] += static_cast<float>(s[j]);
      }
    }
  });
  double total = 0;
  for (double l : losses) total += l;
  return total;
}

}  // namespace lcd
