// Batch parallelism: the batch is cut into parts, and each part runs whole (every op of a forward, or a
// forward and its backward) on one thread, the parts handed out dynamically to the threads.
//
// Why: on the 2-core machines this project runs on, splitting every op across the threads lost to moving
// activations between the cores' caches and to hundreds of fork/join points per UNet pass; measured on the
// UNet forward at batch 64 (bf16, 2-core Xeon): op-parallel 0.097–0.112 s, two half-batch forwards side by
// side 0.038–0.062 s. A part's activations stay in its core's L2, and a slow (descheduled) thread simply takes
// fewer parts. Part sizes depend on the batch only, so results do not depend on the thread count or on which
// thread ran which part; batches too small to cut run op-parallel as before.
#pragma once
#include <cstdint>
#include <functional>

#include "autograd/flat_parameters.h"

namespace lcd {

struct BatchParts {
  int64_t size, count;  // parts of `size` samples (the last may be shorter)
};
// About 16 samples a part, at most 8 parts; one part (no split) below 32 samples.
BatchParts batch_parts(int64_t batch);

// Whether a batch of this size is cut into parts here: more than one part, and not already inside a part
// or another parallel region. One thread runs the same parts in turn, so results do not depend on the
// thread count.
bool splits_batch(int64_t batch);

// Whether this thread is running one part of a batch-parallel pass (whatever the number of threads: with one
// thread the parts run in turn, and kernels must cut their work the same way as with two).
bool in_batch_part();

// Runs fn(begin, count) for every part of [0, batch), in parallel when splits_batch(batch), else as one call.
// The caller's grad mode holds on the worker threads; the first exception thrown by a part is rethrown here.
void for_each_part(int64_t batch, const std::function<void(int64_t begin, int64_t count)>& fn);

// Without a tape: the batch-major results f(begin, count) of every part, joined along axis 0. The batch-
// parallel form of a no-grad model forward.
Tensor map_parts(int64_t batch, const std::function<Tensor(int64_t begin, int64_t count)>& f);

// map_parts for pairs of rows (UNet2DConditionModel::forward_pair): f(begin, count) returns 2·count rows, those of
// samples [begin, begin + count) under a first and then a second condition; a part holds as many rows as a part
// of map_parts(2·batch) does. Returns (2·batch, ...): every sample's first rows in order, then its second rows.
Tensor map_pair_parts(int64_t batch, const std::function<Tensor(int64_t begin, int64_t count)>& f);

// The gradients of Σ_parts part_loss(begin, count) with respect to `params`, added into params' gradient
// buffer, and that sum's value. Each part builds its own graph and runs its own backward on its thread,
// into a private gradient buffer (GradientRedirect); the buffers are added in part order, in double (into
// params.wide_grads() where kept, else rounded once into the float buffer).
double parallel_backward(FlatParameters& params, int64_t batch,
                         const std::function<Tensor(int64_t begin, int64_t count)>& part_loss);

}  // namespace lcd
