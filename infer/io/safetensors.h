// safetensors reader and writer (DESIGN.md §6.2). The reader validates exactly as the reference Rust reader
// (reference/lora-merge.md §1.3: header size, UTF-8 JSON, sorted contiguous non-overlapping offsets, exact byte
// sizes, no trailing bytes) and also rejects duplicate keys. A file is memory-mapped (read-only), so a 3.4 GB
// Stable Diffusion UNet is not read whole into memory and then copied: each tensor is converted straight from
// the mapping, and release() hands its pages back once copied.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "autograd/atomic_file.h"
#include "autograd/tensor.h"

namespace lcd {

enum class DType { kF32, kF16, kBF16, kF64, kI64, kI32, kU8, kBool };

const char* dtype_name(DType dtype);
size_t dtype_size(DType dtype);

struct SafetensorsEntry {
  DType dtype;
  std::vector<int64_t> shape;
  size_t begin = 0, end = 0;  // byte offsets into the data section
};

class SafetensorsFile {
 public:
  // Maps and validates a file; throws IoError (unreadable) or FormatError (invalid, naming the rule).
  static SafetensorsFile read(const std::string& path);
  static SafetensorsFile parse(std::vector<uint8_t> bytes, const std::string& origin);

  const std::string& path() const { return path_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  std::vector<std::string> names() const;  // sorted
  bool contains(const std::string& name) const { return entries_.count(name) != 0; }
  const SafetensorsEntry& entry(const std::string& name) const;
  const uint8_t* raw(const std::string& name) const;
  // The tensor converted to float32 (F32, F16, BF16, F64, I64 and I32 are converted).
  Tensor tensor(const std::string& name) const;
  // The tensor's values converted to float32 into `out` (room for all of them), with no intermediate tensor.
  void read_floats(const std::string& name, float* out) const;
  double scalar(const std::string& name) const;  // a one-element tensor of any numeric dtype
  // Drops the tensor's pages of a mapped file from this process's resident memory (they are read again if
  // the tensor is used later); nothing for a file parsed from memory.
  void release(const std::string& name) const;

 private:
  std::string path_;
  static SafetensorsFile parse_bytes(std::shared_ptr<const uint8_t> bytes, size_t size, bool mapped,
                                     const std::string& origin);
  std::shared_ptr<const uint8_t> bytes_;  // the whole file: a read-only mapping or an owned buffer
  size_t size_ = 0;
  bool mapped_ = false;
  size_t data_start_ = 0;
  std::map<std::string, SafetensorsEntry> entries_;
  std::map<std::string, std::string> metadata_;
};

// One tensor to write: float data stored as `dtype` (F32, F16, BF16, F64) or an I64 scalar list.
struct SafetensorsTensor {
  std::string name;
  Tensor value;
  DType dtype = DType::kF32;
};

// Writes through a temp file in the same folder, then renames over `path`. Tensors are ordered as the reference
// writer does (dtype descending, then name), the header padded with spaces to a multiple of 8.
void write_safetensors(const std::string& path, const std::vector<SafetensorsTensor>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

}  // namespace lcd
