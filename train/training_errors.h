// The errors a training run ends with (beside the input errors of autograd/errors.h).
#pragma once
#include "autograd/errors.h"

namespace lcd {

struct TrainingError : Error {
  using Error::Error;
};
// The loss or the gradient norm became NaN or infinite.
struct NonFiniteError : TrainingError {
  using TrainingError::TrainingError;
};
// Another process of a multi-process run ended or stopped answering mid-step (train/distributed.h).
struct PeerLostError : TrainingError {
  using TrainingError::TrainingError;
};

}  // namespace lcd
