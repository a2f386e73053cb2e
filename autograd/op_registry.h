// Registry of differentiable ops. Every op file declares itself with LCD_DIFFERENTIABLE_OP(name); the test
// suite registers a finite-difference check per op (tests/autograd/gradcheck_ops_test.cpp) and fails when an
// op has none (DESIGN.md §8.1). lcd_autograd is linked whole so that no registration is dropped.
#pragma once
#include <string>
#include <vector>

namespace lcd {

bool register_differentiable_op(const char* name);
std::vector<std::string> differentiable_ops();  // sorted

}  // namespace lcd

#define LCD_DIFFERENTIABLE_OP(name) \
  [[maybe_unused]] static const bool lcd_differentiable_op_##name = ::lcd::register_differentiable_op(#name)
