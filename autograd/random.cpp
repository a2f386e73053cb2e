// Rng (see random.h).
#include "autograd/random.h"

#include <cmath>
#include <sstream>

#include "autograd/errors.h"

namespace lcd {

double Rng::uniform() { return static_cast<double>(engine_() >> 11) * (1.0 / 9007199254740992.0); }

int64_t Rng::uniform_int(int64_t n) {
  if (n <= 0) throw ValueError("uniform_int needs n > 0");
  // Rejection sampling: unbiased for any n.
  const uint64_t limit = UINT64_MAX - UINT64_MAX % static_cast<uint64_t>(n);
  uint64_t v;
  do v = engine_();
  while (v >= limit);
  return static_cast<int64_t>(v % static_cast<uint64_t>(n));
}

double Rng::normal() {
  if (has_spare_) {
    has_spare_ = false;
    return spare_;
  }
  double u1;
  do u1 = uniform();
  while (u1 <= 0.0);
  const double u2 = uniform();
  const double r = std::sqrt(-2.0 * std::log(u1)), theta = 2.0 * M_PI * u2;
  spare_ = r * std::sin(theta);
  has_spare_ = true;
  return r * std::cos(theta);
}

Tensor Rng::normal_tensor(const Shape& shape) {
  Tensor t = Tensor::empty(shape);
  for (int64_t i = 0; i < t.numel(); ++i) t.data()[i] = static_cast<float>(normal());
  return t;
}

std::string Rng::state() const {
  std::ostringstream out;
  out.precision(17);
  out << engine_ << ' ' << has_spare_ << ' ' << spare_;
  return out.str();
}

void Rng::set_state(const std::string& s) {
  std::istringstream in(s);
  in >> engine_ >> has_spare_ >> spare_;
  if (in.fail()) throw ValueError("malformed random generator state");
}

}  // namespace lcd
