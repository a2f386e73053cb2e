// Module: parameter and child registration, dotted-name traversal.
#include "infer/nn/module.h"

namespace lcd {

static std::string join(const std::string& prefix, const std::string& name) {
  return prefix.empty() ? name : prefix + "." + name;
}

namespace {
thread_local bool g_shape_only = false;
}

ShapeOnlyGuard::ShapeOnlyGuard() : previous_(g_shape_only) { g_shape_only = true; }
ShapeOnlyGuard::~ShapeOnlyGuard() { g_shape_only = previous_; }

void Module::register_parameter(const std::string& name, Tensor* slot, const Shape& shape) {
  *slot = g_shape_only ? Tensor::from_storage(shape, nullptr) : Tensor::zeros(shape);
  slot->impl()->packable = !g_shape_only;  // frozen weights may be packed once for the GEMM kernels
  parameters_.emplace_back(name, slot);
}

void Module::register_module(const std::string& name, Module* child) { children_.emplace_back(name, child); }

std::vector<std::pair<std::string, Tensor*>> Module::named_parameters(const std::string& prefix) const {
  std::vector<std::pair<std::string, Tensor*>> out;
  // Iterative walk, in registration order.
  std::vector<std::pair<std::string, const Module*>> stack{{prefix, this}};
  while (!stack.empty()) {
    auto [p, m] = stack.back();
    stack.pop_back();
    for (const auto& [name, t] : m->parameters_) out.emplace_back(join(p, name), t);
    for (auto it = m->children_.rbegin(); it != m->children_.rend(); ++it) stack.emplace_back(join(p, it->first), it->second);
  }
  return out;
}

std::vector<std::pair<std::string, Module*>> Module::named_modules(const std::string& prefix) {
  std::vector<std::pair<std::string, Module*>> out;
  std::vector<std::pair<std::string, Module*>> stack{{prefix, this}};
  while (!stack.empty()) {
    auto [p, m] = stack.back();
    stack.pop_back();
    out.emplace_back(p, m);
    for (auto it = m->children_.rbegin(); it != m->children_.rend(); ++it) stack.emplace_back(join(p, it->first), it->second);
  }
  return out;
}

int64_t Module::parameter_count() const {
  int64_t n = 0;
  for (const auto& [name, t] : named_parameters()) n += t->numel();
  return n;
}

}  // namespace lcd
