// HDF5 wrapper (see hdf5.h).
#include "datasets/hdf5.h"

#include <cstring>
#include <filesystem>

#include "autograd/errors.h"

namespace lcd {

namespace {

// Silence HDF5's own error printing once; lcdkit reports errors itself.
const bool kQuietHdf5 = [] {
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
  return true;
}();

struct Handle {  // closes any HDF5 id with the right function
  hid_t id;
  herr_t (*close)(hid_t);
  ~Handle() {
    if (id >= 0) close(id);
  }
};

}  // namespace

Hdf5File Hdf5File::create(const std::string& path) {
  (void)kQuietHdf5;
  hid_t id = H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
  if (id < 0) throw IoError(path + ": cannot create HDF5 file");
  return Hdf5File(id, path);
}

Hdf5File Hdf5File::open(const std::string& path) {
  (void)kQuietHdf5;
  if (H5Fis_hdf5(path.c_str()) <= 0) throw IoError(path + ": missing or not an HDF5 file");
  hid_t id = H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  if (id < 0) throw IoError(path + ": cannot open HDF5 file");
  return Hdf5File(id, path);
}

Hdf5File::~Hdf5File() {
  if (id_ >= 0) H5Fclose(id_);
}

Hdf5File::Hdf5File(Hdf5File&& other) noexcept : id_(other.id_), path_(std::move(other.path_)) { other.id_ = -1; }

bool Hdf5File::exists(const std::string& name) const {
  // Check each prefix: H5Lexists fails on a path whose parent does not exist.
  size_t pos = 0;
  while ((pos = name.find('/', pos + 1)) != std::string::npos)
    if (H5Lexists(id_, name.substr(0, pos).c_str(), H5P_DEFAULT) <= 0) return false;
  return H5Lexists(id_, name.c_str(), H5P_DEFAULT) > 0;
}

void Hdf5File::create_group(const std::string& name) {
  size_t pos = 0;
  while (true) {
    pos = name.find('/', pos + 1);
    const std::string prefix = name.substr(0, pos);
    if (!prefix.empty() && prefix != "/" && !exists(prefix)) {
      Handle plist{H5Pcreate(H5P_GROUP_CREATE), H5Pclose};
      H5Pset_obj_track_times(plist.id, false);  // no timestamps: the same content gives the same bytes
      Handle g{H5Gcreate2(id_, prefix.c_str(), H5P_DEFAULT, plist.id, H5P_DEFAULT), H5Gclose};
      if (g.id < 0) throw IoError(path_ + ": cannot create group " + prefix);
    }
    if (pos == std::string::npos) break;
  }
}

static void write_raw(hid_t file, const std::string& path, const std::string& name, hid_t type,
                      const std::vector<hsize_t>& dims, const void* data) {
  Handle space{dims.empty() ? H5Screate(H5S_SCALAR) : H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr),
               H5Sclose};
  Handle plist{H5Pcreate(H5P_DATASET_CREATE), H5Pclose};
  H5Pset_obj_track_times(plist.id, false);  // no timestamps: the same content gives the same bytes
  Handle set{H5Dcreate2(file, name.c_str(), type, space.id, H5P_DEFAULT, plist.id, H5P_DEFAULT), H5Dclose};
  if (set.id < 0 || H5Dwrite(set.id, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) < 0)
    throw IoError(path + ": cannot write dataset " + name);
}

void Hdf5File::write(const std::string& name, const Tensor& t) {
  std::vector<hsize_t> dims;
  for (int64_t d : t.shape().to_vector()) dims.push_back(static_cast<hsize_t>(d));
  write_raw(id_, path_, name, H5T_NATIVE_FLOAT, dims, t.data());
}

void Hdf5File::write(const std::string& name, const std::vector<double>& v) {
  write_raw(id_, path_, name, H5T_NATIVE_DOUBLE, {static_cast<hsize_t>(v.size())}, v.data());
}

void Hdf5File::write(const std::string& name, const std::vector<int64_t>& v) {
  write_raw(id_, path_, name, H5T_NATIVE_INT64, {static_cast<hsize_t>(v.size())}, v.data());
}

void Hdf5File::write_bytes(const std::string& name, const std::string& bytes) {
  write_raw(id_, path_, name, H5T_NATIVE_UINT8, {static_cast<hsize_t>(bytes.size())}, bytes.data());
}

std::vector<int64_t> Hdf5File::shape(const std::string& name) const {
  Handle set{H5Dopen2(id_, name.c_str(), H5P_DEFAULT), H5Dclose};
  if (set.id < 0) throw IoError(path_ + ": no dataset " + name);
  Handle space{H5Dget_space(set.id), H5Sclose};
  const int rank = H5Sget_simple_extent_ndims(space.id);
  std::vector<hsize_t> dims(rank);
  H5Sget_simple_extent_dims(space.id, dims.data(), nullptr);
  return std::vector<int64_t>(dims.begin(), dims.end());
}

static void read_raw(hid_t file, const std::string& path, const std::string& name, hid_t type, void* data) {
  Handle set{H5Dopen2(file, name.c_str(), H5P_DEFAULT), H5Dclose};
  if (set.id < 0) throw IoError(path + ": no dataset " + name);
  if (H5Dread(set.id, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) < 0)
    throw IoError(path + ": cannot read dataset " + name + " (corrupt file or wrong type)");
}

// Elements of a dataset (the product of its dimensions), checked before anything is allocated for it: no
// overflow, and no more than the data the file stores for it (lcdkit writes contiguous, uncompressed data, so a
// shape larger than its storage is a corrupt or hostile file, not one to allocate gigabytes for).
int64_t Hdf5File::checked_elements(const std::string& name) const {
  const std::vector<int64_t> dims = shape(name);
  if (dims.size() > static_cast<size_t>(Shape::kMaxRank))
    throw FormatError(path_ + ": dataset " + name + " has rank " + std::to_string(dims.size()) + " (max 5)");
  int64_t n = 1;
  for (int64_t d : dims) {
    if (d < 0 || (d > 0 && n > (int64_t{1} << 40) / d)) throw FormatError(path_ + ": dataset " + name + " has an impossible shape");
    n *= d;
  }
  Handle set{H5Dopen2(id_, name.c_str(), H5P_DEFAULT), H5Dclose};
  Handle type{H5Dget_type(set.id), H5Tclose};
  const size_t element_size = type.id < 0 ? 0 : H5Tget_size(type.id);
  const hsize_t stored = H5Dget_storage_size(set.id);
  std::error_code ec;
  const uintmax_t file_bytes = std::filesystem::file_size(path_, ec);  // a corrupt header can claim any storage
  if (element_size == 0 || static_cast<uint64_t>(n) * element_size > stored ||
      (!ec && static_cast<uint64_t>(n) * element_size > file_bytes))
    throw FormatError(path_ + ": dataset " + name + " declares " + std::to_string(n) + " elements but stores " +
                      std::to_string(stored) + " bytes");
  return n;
}

Tensor Hdf5File::read_tensor(const std::string& name) const {
  checked_elements(name);
  Tensor t = Tensor::empty(Shape(shape(name)));
  read_raw(id_, path_, name, H5T_NATIVE_FLOAT, t.data());
  return t;
}

std::vector<double> Hdf5File::read_doubles(const std::string& name) const {
  std::vector<double> v(checked_elements(name));
  read_raw(id_, path_, name, H5T_NATIVE_DOUBLE, v.data());
  return v;
}

std::vector<int64_t> Hdf5File::read_int64(const std::string& name) const {
  std::vector<int64_t> v(checked_elements(name));
  read_raw(id_, path_, name, H5T_NATIVE_INT64, v.data());
  return v;
}

std::string Hdf5File::read_bytes(const std::string& name) const {
  std::string s(static_cast<size_t>(checked_elements(name)), '\0');
  read_raw(id_, path_, name, H5T_NATIVE_UINT8, s.data());
  return s;
}

namespace {
hid_t open_object(hid_t file, const std::string& path, const std::string& object) {
  hid_t o = H5Oopen(file, object.c_str(), H5P_DEFAULT);
  if (o < 0) throw IoError(path + ": no object " + object);
  return o;
}

void write_attribute(hid_t file, const std::string& path, const std::string& object, const std::string& key, hid_t type,
                     const void* data) {
  Handle obj{open_object(file, path, object), H5Oclose};
  if (H5Aexists(obj.id, key.c_str()) > 0) H5Adelete(obj.id, key.c_str());
  Handle space{H5Screate(H5S_SCALAR), H5Sclose};
  Handle attr{H5Acreate2(obj.id, key.c_str(), type, space.id, H5P_DEFAULT, H5P_DEFAULT), H5Aclose};
  if (attr.id < 0 || H5Awrite(attr.id, type, data) < 0)
    throw IoError(path + ": cannot write attribute " + key + " on " + object);
}

Handle open_attribute(hid_t file, const std::string& path, const std::string& object, const std::string& key, hid_t* obj) {
  *obj = open_object(file, path, object);
  hid_t a = H5Aopen(*obj, key.c_str(), H5P_DEFAULT);
  if (a < 0) {
    H5Oclose(*obj);
    throw IoError(path + ": no attribute " + key + " on " + object);
  }
  return Handle{a, H5Aclose};
}
}  // namespace

void Hdf5File::set_attribute(const std::string& object, const std::string& key, const std::string& value) {
  Handle type{H5Tcopy(H5T_C_S1), H5Tclose};
  H5Tset_size(type.id, std::max<size_t>(value.size(), 1));
  H5Tset_strpad(type.id, H5T_STR_NULLPAD);
  std::string padded = value.empty() ? std::string(1, '\0') : value;
  write_attribute(id_, path_, object, key, type.id, padded.data());
}
void Hdf5File::set_attribute(const std::string& object, const std::string& key, double value) {
  write_attribute(id_, path_, object, key, H5T_NATIVE_DOUBLE, &value);
}
void Hdf5File::set_attribute(const std::string& object, const std::string& key, int64_t value) {
  write_attribute(id_, path_, object, key, H5T_NATIVE_INT64, &value);
}

bool Hdf5File::has_attribute(const std::string& object, const std::string& key) const {
  if (!exists(object) && object != "/") return false;
  Handle obj{open_object(id_, path_, object), H5Oclose};
  return H5Aexists(obj.id, key.c_str()) > 0;
}

std::string Hdf5File::string_attribute(const std::string& object, const std::string& key) const {
  hid_t obj;
  Handle attr = open_attribute(id_, path_, object, key, &obj);
  Handle o{obj, H5Oclose};
  Handle type{H5Aget_type(attr.id), H5Tclose};
  if (H5Tget_class(type.id) != H5T_STRING) throw IoError(path_ + ": attribute " + key + " is not a string");
  std::string s(H5Tget_size(type.id), '\0');
  H5Aread(attr.id, type.id, s.data());
  s.erase(s.find_last_not_of('\0') + 1);
  return s;
}

double Hdf5File::double_attribute(const std::string& object, const std::string& key) const {
  hid_t obj;
  Handle attr = open_attribute(id_, path_, object, key, &obj);
  Handle o{obj, H5Oclose};
  double v = 0;
  if (H5Aread(attr.id, H5T_NATIVE_DOUBLE, &v) < 0) throw IoError(path_ + ": attribute " + key + " is not a number");
  return v;
}

int64_t Hdf5File::int_attribute(const std::string& object, const std::string& key) const {
  hid_t obj;
  Handle attr = open_attribute(id_, path_, object, key, &obj);
  Handle o{obj, H5Oclose};
  int64_t v = 0;
  if (H5Aread(attr.id, H5T_NATIVE_INT64, &v) < 0) throw IoError(path_ + ": attribute " + key + " is not an integer");
  return v;
}

std::vector<std::string> Hdf5File::members(const std::string& group) const {
  Handle g{H5Gopen2(id_, group.c_str(), H5P_DEFAULT), H5Gclose};
  if (g.id < 0) throw IoError(path_ + ": no group " + group);
  H5G_info_t info;
  if (H5Gget_info(g.id, &info) < 0) throw FormatError(path_ + ": group " + group + " is corrupt");
  std::vector<std::string> names;
  for (hsize_t i = 0; i < info.nlinks; ++i) {
    const ssize_t len = H5Lget_name_by_idx(g.id, ".", H5_INDEX_NAME, H5_ITER_INC, i, nullptr, 0, H5P_DEFAULT);
    if (len < 0 || len > 65536) throw FormatError(path_ + ": group " + group + " has an unreadable member name");
    std::string name(static_cast<size_t>(len), '\0');
    if (H5Lget_name_by_idx(g.id, ".", H5_INDEX_NAME, H5_ITER_INC, i, name.data(), static_cast<size_t>(len) + 1, H5P_DEFAULT) < 0)
      throw FormatError(path_ + ": group " + group + " has an unreadable member name");
    names.push_back(name);
  }
  return names;
}

}  // namespace lcd
