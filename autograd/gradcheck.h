// Finite-difference gradient check in double precision. The function's output is contracted with a fixed
// random tensor R, L = Σ out ⊙ R, so every output element contributes with a distinct weight and a
// transposed, mis-signed or mis-scaled gradient shows up as a mismatch. Central differences with step eps.
#pragma once
#include <functional>
#include <string>
#include <vector>

#include "autograd/tensor.h"

namespace lcd {

struct GradcheckOptions {
  double eps = 1e-6;
  double atol = 1e-7;
  double rtol = 1e-5;
  uint64_t seed = 1234;
};

struct GradcheckResult {
  bool ok = true;
  double max_abs_error = 0;
  int64_t checked = 0;   // number of input elements compared
  std::string message;   // the first mismatch, "input 1 [5]: analytic 0.3 vs numeric -0.3"
};

// `inputs` that require grad are checked; the others are held constant.
GradcheckResult gradcheck(const std::function<TensorD(const std::vector<TensorD>&)>& fn, std::vector<TensorD> inputs,
                          const GradcheckOptions& options = {});

// A double tensor of the given shape with N(0,1) entries (seeded); optionally requiring grad.
TensorD random_tensor(const Shape& shape, uint64_t seed, bool requires_grad = true, double offset = 0.0);

}  // namespace lcd
