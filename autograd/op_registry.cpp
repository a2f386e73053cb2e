// Registry of differentiable ops (see op_registry.h).
#include "autograd/op_registry.h"

#include <algorithm>

namespace lcd {

static std::vector<std::string>& registry() {
  static std::vector<std::string> names;
  return names;
}

bool register_differentiable_op(const char* name) {
  registry().emplace_back(name);
  return true;
}

std::vector<std::string> differentiable_ops() {
  auto names = registry();
  std::sort(names.begin(), names.end());
  names.erase(std::unique(names.begin(), names.end()), names.end());
  return names;
}

}  // namespace lcd
