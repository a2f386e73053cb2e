// Training checkpoints (DESIGN.md §6.4): one HDF5 file per save, written atomically into <run>/checkpoints/
// as checkpoint-<step>.h5, the last `keep` kept. Holds the trainable weights, the EMA weights, the AdamW
// moments and step count, the step, the random generator and batcher states, the parameter names and shapes,
// and the resolved config.
#pragma once
#include <string>
#include <vector>

#include "autograd/flat_parameters.h"

namespace lcd {

struct TrainingState {
  int64_t step = 0;
  int64_t adam_steps = 0;
  std::string rng_state;
  int64_t batcher_epoch = 0, batcher_position = 0;
  std::string config_json;
  std::vector<std::pair<std::string, std::vector<int64_t>>> layout;  // parameter names and shapes, in order
  std::vector<float> params, ema, adam_m, adam_v;
};

// Writes <dir>/checkpoint-<step>.h5 (or checkpoint-<step>-emergency.h5); returns its path. Prunes to `keep`.
std::string save_checkpoint(const std::string& dir, const TrainingState& state, int64_t keep, bool emergency = false);
TrainingState load_checkpoint(const std::string& path);
// The checkpoint with the highest step in dir (emergency ones included); empty if none.
std::string latest_checkpoint(const std::string& dir);

// The names and shapes of a FlatParameters, for the layout check on resume.
std::vector<std::pair<std::string, std::vector<int64_t>>> layout_of(const FlatParameters& params);

}  // namespace lcd
