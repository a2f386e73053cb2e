// Helpers for the per-op gradient checks: GRADCHECK_TEST(op) defines a test and records that `op` has a check.
#pragma once
#include <gtest/gtest.h>

#include <set>
#include <string>

#include "autograd/gradcheck.h"
#include "autograd/ops.h"

namespace lcd::testing {

std::set<std::string>& checked_ops();
inline bool register_check(const char* op) {
  checked_ops().insert(op);
  return true;
}

// Runs gradcheck and reports the first mismatch.
inline void expect_gradients_match(const std::function<TensorD(const std::vector<TensorD>&)>& fn,
                                   std::vector<TensorD> inputs, const char* label) {
  GradcheckResult r = gradcheck(fn, std::move(inputs));
  EXPECT_TRUE(r.ok) << label << ": " << r.message;
  EXPECT_GT(r.checked, 0) << label << ": no input element was checked";
}

// N(0,1) entries shifted away from zero to (0.5 + |x|), for ops defined on positive inputs.
inline TensorD positive_tensor(const Shape& shape, uint64_t seed) {
  TensorD t = random_tensor(shape, seed, false);
  for (int64_t i = 0; i < t.numel(); ++i) t.data()[i] = 0.5 + std::abs(t.data()[i]);
  t.set_requires_grad(true);
  return t;
}

}  // namespace lcd::testing

#define GRADCHECK_TEST(op)                                                                     \
  static void gradcheck_body_##op();                                                           \
  [[maybe_unused]] static const bool gradcheck_registered_##op = ::lcd::testing::register_check(#op); \
  TEST(Gradcheck, op) { gradcheck_body_##op(); }                                               \
  static void gradcheck_body_##op()
