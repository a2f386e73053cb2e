// Module: the base of every network piece. Parameters are tensor members registered with their diffusers
// name; named_parameters() yields the dotted names ("down_blocks.0.resnets.1.conv1.weight") that are the
// checkpoint keys (DESIGN.md §8.2). Modules are neither copied nor moved, so registered pointers stay valid.
#pragma once
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "autograd/tensor.h"

namespace lcd {

class LoraLayer;

class Module {
 public:
  Module() = default;
  virtual ~Module() = default;
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;

  // Every parameter under this module, with dotted names prefixed by `prefix`.
  std::vector<std::pair<std::string, Tensor*>> named_parameters(const std::string& prefix = "") const;
  // Every module under this one (itself included, with name `prefix`).
  std::vector<std::pair<std::string, Module*>> named_modules(const std::string& prefix = "");
  int64_t parameter_count() const;
  // This module as a layer LoRA can target (Linear, Conv2d), or null.
  virtual LoraLayer* lora_layer() { return nullptr; }
  virtual const LoraLayer* lora_layer() const { return nullptr; }

 protected:
  // Allocates a zero tensor of `shape` into `*slot` and registers it as `name`.
  void register_parameter(const std::string& name, Tensor* slot, const Shape& shape);
  // Registers a child module owned by the subclass (a member or an element of a container of unique_ptrs).
  void register_module(const std::string& name, Module* child);

 private:
  std::vector<std::pair<std::string, Tensor*>> parameters_;
  std::vector<std::pair<std::string, Module*>> children_;
};

// While alive, modules built on this thread register their parameters with shapes only (no storage): for
// tools that need an architecture's module names and shapes but not its weights (e.g. benchmarks on
// Stable Diffusion-sized UNets).
class ShapeOnlyGuard {
 public:
  ShapeOnlyGuard();
  ~ShapeOnlyGuard();
  ShapeOnlyGuard(const ShapeOnlyGuard&) = delete;
  ShapeOnlyGuard& operator=(const ShapeOnlyGuard&) = delete;

 private:
  bool previous_;
};

// A list of child modules named "0", "1", … (diffusers' nn.ModuleList).
template <typename M>
class ModuleList : public Module {
 public:
  M& add(std::unique_ptr<M> m) {
    items_.push_back(std::move(m));
    register_module(std::to_string(items_.size() - 1), items_.back().get());
    return *items_.back();
  }
  size_t size() const { return items_.size(); }
  bool empty() const { return items_.empty(); }
  M& operator[](size_t i) const { return *items_[i]; }

 private:
  std::vector<std::unique_ptr<M>> items_;
};

}  // namespace lcd
