// A thin RAII wrapper over the HDF5 C API for lcdkit's files (latent caches, checkpoints, adapter exports):
// float32/float64/int64 datasets of any rank, string/float/int attributes, groups. Every failure is an
// IoError naming the file and the object.
#pragma once
#include <hdf5.h>

#include <cstdint>
#include <string>
#include <vector>

#include "autograd/tensor.h"

namespace lcd {

class Hdf5File {
 public:
  static Hdf5File create(const std::string& path);  // truncates; use inside write_through_temp_file
  static Hdf5File open(const std::string& path);    // read-only
  ~Hdf5File();
  Hdf5File(Hdf5File&& other) noexcept;
  Hdf5File& operator=(Hdf5File&&) = delete;
  Hdf5File(const Hdf5File&) = delete;

  const std::string& path() const { return path_; }
  bool exists(const std::string& name) const;  // a dataset or group path such as "/lora/conv_in"
  void create_group(const std::string& name);  // creates missing parents too

  void write(const std::string& name, const Tensor& t);
  void write(const std::string& name, const std::vector<double>& values);
  void write(const std::string& name, const std::vector<int64_t>& values);
  void write_bytes(const std::string& name, const std::string& bytes);  // opaque blob as uint8 dataset
  Tensor read_tensor(const std::string& name) const;                    // float32 or float64 → float32
  std::vector<double> read_doubles(const std::string& name) const;
  std::vector<int64_t> read_int64(const std::string& name) const;
  std::string read_bytes(const std::string& name) const;
  std::vector<int64_t> shape(const std::string& name) const;

  // Attributes on an object ("/" for the file).
  void set_attribute(const std::string& object, const std::string& key, const std::string& value);
  void set_attribute(const std::string& object, const std::string& key, double value);
  void set_attribute(const std::string& object, const std::string& key, int64_t value);
  bool has_attribute(const std::string& object, const std::string& key) const;
  std::string string_attribute(const std::string& object, const std::string& key) const;
  double double_attribute(const std::string& object, const std::string& key) const;
  int64_t int_attribute(const std::string& object, const std::string& key) const;

  // Names of the members of a group.
  std::vector<std::string> members(const std::string& group) const;

 private:
  Hdf5File(hid_t id, std::string path) : id_(id), path_(std::move(path)) {}
  int64_t checked_elements(const std::string& name) const;  // elements, after checking the stored bytes hold them
  hid_t id_ = -1;
  std::string path_;
};

}  // namespace lcd
