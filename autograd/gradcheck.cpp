// Finite-difference gradient check (see gradcheck.h).
#include "autograd/gradcheck.h"

#include <cmath>
#include <random>
#include <sstream>

#include "autograd/ops.h"
#include "autograd/tape.h"

namespace lcd {

TensorD random_tensor(const Shape& shape, uint64_t seed, bool requires_grad, double offset) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> normal(0.0, 1.0);
  auto t = TensorD::empty(shape);
  for (int64_t i = 0; i < t.numel(); ++i) t.data()[i] = normal(rng) + offset;
  t.set_requires_grad(requires_grad);
  return t;
}

// L = Σ out ⊙ R, evaluated without recording.
static double contracted(const std::function<TensorD(const std::vector<TensorD>&)>& fn,
                         const std::vector<TensorD>& inputs, const TensorD& r) {
  NoGradGuard no_grad;
  TensorD out = fn(inputs);
  double acc = 0;
  for (int64_t i = 0; i < out.numel(); ++i) acc += out.data()[i] * r.data()[i];
  return acc;
}

GradcheckResult gradcheck(const std::function<TensorD(const std::vector<TensorD>&)>& fn, std::vector<TensorD> inputs,
                          const GradcheckOptions& options) {
  GradcheckResult result;
  for (auto& x : inputs) x.zero_grad();
  TensorD out = fn(inputs);
  TensorD r = random_tensor(out.shape(), options.seed, false);
  if (!out.requires_grad()) {
    result.ok = false;
    result.message = "the output does not require grad: nothing was recorded";
    return result;
  }
  run_backward(out, r);  // seeds ∂L/∂out = R

  for (size_t k = 0; k < inputs.size(); ++k) {
    TensorD& x = inputs[k];
    if (!x.requires_grad()) continue;
    TensorD analytic = x.has_grad() ? x.grad().clone() : TensorD::zeros(x.shape());
    for (int64_t i = 0; i < x.numel(); ++i) {
      const double saved = x.data()[i];
      x.data()[i] = saved + options.eps;
      const double plus = contracted(fn, inputs, r);
      x.data()[i] = saved - options.eps;
      const double minus = contracted(fn, inputs, r);
      x.data()[i] = saved;
      const double numeric = (plus - minus) / (2 * options.eps);
      const double a = analytic.data()[i];
      const double err = std::abs(a - numeric);
      result.max_abs_error = std::max(result.max_abs_error, err);
      ++result.checked;
      if (err > options.atol + options.rtol * std::max(std::abs(a), std::abs(numeric)) && result.ok) {
        result.ok = false;
        std::ostringstream m;
        m.precision(10);
        m << "input " << k << " " << x.shape().str() << " element " << i << ": analytic " << a << " vs numeric "
          << numeric;
        result.message = m.str();
      }
    }
  }
  return result;
}

}  // namespace lcd
