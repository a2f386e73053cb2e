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
  // Why an emergency checkpoint was written: "" (a regular one), "nonfinite" (the loss or gradient became NaN or
  // infinite) or "error" (any other failure, an interrupt included).
  std::string stopped_by;
};

// Writes <dir>/checkpoint-<step>.h5 (or checkpoint-<step>-emergency.h5 when state.stopped_by is set); returns
// its path. A regular save prunes to `keep` regular checkpoints and removes emergency ones up to its step.
std::string save_checkpoint(const std::string& dir, const TrainingState& state, int64_t keep);
// Reads and checks a checkpoint's own consistency (format, sizes, ranges, finite values); throws FormatError.
TrainingState load_checkpoint(const std::string& path);
// The checkpoint with the highest step in dir (emergency ones included); empty if none.
std::string latest_checkpoint(const std::string& dir);
// Every checkpoint in dir, newest first (at one step, the emergency one first).
std::vector<std::string> checkpoints_newest_first(const std::string& dir);

// The names and shapes of a FlatParameters, for the layout check on resume.
std::vector<std::pair<std::string, std::vector<int64_t>>> layout_of(const FlatParameters& params);

}  // namespace lcd
