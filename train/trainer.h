// The lcd-train loop: objectives lcd and diffusion, AdamW with a learning-rate schedule and gradient clipping,
// the EMA target, checkpoints (resumable bit for bit), metrics, progress, sample grids and the final adapter
// exports. A NaN/infinite loss or any error mid-run stops with an emergency checkpoint of the last good state.
// Under mpirun every process runs this loop on its rows of each batch; rank 0 alone writes (train/distributed.h).
#pragma once
#include <memory>
#include <string>

#include "train/config.h"
#include "train/training_errors.h"

namespace lcd {

class Trainer {
 public:
  // resume_dir empty: a new run in config.output_dir (which must not hold a run yet).
  Trainer(TrainConfig config, const std::string& resume_dir);
  ~Trainer();
  // Trains until train.steps, the time limit or an interrupt (SIGINT/SIGTERM); returns the last step.
  int64_t run();

 private:
  struct State;
  std::unique_ptr<State> s_;
};

}  // namespace lcd
