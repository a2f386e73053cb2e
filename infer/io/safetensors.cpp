// safetensors reading (with the reference reader's validation) and atomic writing.
#include "infer/io/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "autograd/errors.h"
#include "infer/nn/config_check.h"
#include "infer/io/half.h"

namespace lcd {

using json = nlohmann::json;

namespace {
constexpr uint64_t kMaxHeaderSize = 100000000;  // the reference reader's MAX_HEADER_SIZE

struct DTypeInfo {
  DType dtype;
  const char* name;
  size_t size;
  int write_rank;  // position in the reference writer's order (lower is written first)
};
const DTypeInfo kDTypes[] = {
    {DType::kI64, "I64", 8, 1}, {DType::kF64, "F64", 8, 2}, {DType::kF32, "F32", 4, 4},  {DType::kI32, "I32", 4, 6},
    {DType::kBF16, "BF16", 2, 7}, {DType::kF16, "F16", 2, 8}, {DType::kU8, "U8", 1, 12}, {DType::kBool, "BOOL", 1, 13},
};

const DTypeInfo& info(DType d) {
  for (const auto& i : kDTypes)
    if (i.dtype == d) return i;
  throw ValueError("unknown dtype");
}
}  // namespace

const char* dtype_name(DType dtype) { return info(dtype).name; }
size_t dtype_size(DType dtype) { return info(dtype).size; }

SafetensorsFile SafetensorsFile::read(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw IoError(path + ": cannot open safetensors file");
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    throw IoError(path + ": cannot open safetensors file (not a regular file)");
  }
  const size_t size = static_cast<size_t>(st.st_size);
  if (size == 0) {
    ::close(fd);
    return parse({}, path);
  }
  void* p = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);  // the mapping keeps the file
  if (p == MAP_FAILED) throw IoError(path + ": cannot map safetensors file");
  std::shared_ptr<const uint8_t> bytes(static_cast<const uint8_t*>(p), [size](const uint8_t* q) {
    ::munmap(const_cast<uint8_t*>(q), size);
  });
  return parse_bytes(std::move(bytes), size, true, path);
}

SafetensorsFile SafetensorsFile::parse(std::vector<uint8_t> bytes, const std::string& origin) {
  auto owned = std::make_shared<std::vector<uint8_t>>(std::move(bytes));
  const size_t size = owned->size();
  std::shared_ptr<const uint8_t> view(owned, owned->data());  // shares ownership of the vector
  return parse_bytes(std::move(view), size, false, origin);
}

SafetensorsFile SafetensorsFile::parse_bytes(std::shared_ptr<const uint8_t> data, size_t size, bool mapped,
                                             const std::string& origin) {
  const uint8_t* bytes = data.get();
  auto fail = [&](const std::string& why) { return FormatError(origin + ": invalid safetensors: " + why); };
  SafetensorsFile f;
  f.path_ = origin;
  // Rule 1-2: header length.
  if (size < 8) throw fail("file shorter than the 8-byte header length");
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | bytes[i];
  if (n > kMaxHeaderSize) throw fail("header length " + std::to_string(n) + " exceeds 100,000,000 bytes");
  if (n + 8 > size) throw fail("header length " + std::to_string(n) + " runs past the end of the file");
  // Rule 3: UTF-8 JSON of the expected structure; duplicate keys rejected explicitly.
  const std::string header(reinterpret_cast<const char*>(bytes + 8), n);
  std::vector<std::set<std::string>> keys_at_depth;
  std::string duplicate;
  json::parser_callback_t on_event = [&](int, json::parse_event_t event, json& parsed) {
    if (event == json::parse_event_t::object_start) keys_at_depth.emplace_back();
    if (event == json::parse_event_t::object_end) keys_at_depth.pop_back();
    if (event == json::parse_event_t::key && !keys_at_depth.empty() &&
        !keys_at_depth.back().insert(parsed.get<std::string>()).second && duplicate.empty())
      duplicate = parsed.get<std::string>();
    return true;
  };
  json doc;
  try {
    doc = json::parse(header, on_event);
  } catch (const json::exception& e) {
    throw fail(std::string("header is not valid UTF-8 JSON (") + json_error_text(e) + ")");
  }
  if (!duplicate.empty()) throw fail("duplicate key \"" + duplicate + "\" in the header");
  if (!doc.is_object()) throw fail("header is not a JSON object");

  std::vector<std::pair<std::string, SafetensorsEntry>> ordered;
  for (auto it = doc.begin(); it != doc.end(); ++it) {
    const std::string& name = it.key();
    const json& v = it.value();
    if (name == "__metadata__") {
      if (!v.is_object()) throw fail("__metadata__ is not an object");
      for (auto m = v.begin(); m != v.end(); ++m) {
        if (!m.value().is_string()) throw fail("__metadata__ value \"" + m.key() + "\" is not a string");
        f.metadata_[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    if (!v.is_object() || !v.contains("dtype") || !v.contains("shape") || !v.contains("data_offsets") ||
        !v["dtype"].is_string() || !v["shape"].is_array() || !v["data_offsets"].is_array() ||
        v["data_offsets"].size() != 2 || v.size() != 3)
      throw fail("tensor \"" + name + "\" needs exactly dtype, shape and data_offsets");
    SafetensorsEntry e;
    const std::string dt = v["dtype"].get<std::string>();
    bool known = false;
    for (const auto& i : kDTypes)
      if (dt == i.name) {
        e.dtype = i.dtype;
        known = true;
      }
    if (!known) throw fail("tensor \"" + name + "\" has unsupported dtype " + dt);
    for (const auto& d : v["shape"]) {
      if (!d.is_number_unsigned()) throw fail("tensor \"" + name + "\" has a non-integer dimension");
      e.shape.push_back(d.get<int64_t>());
    }
    for (const auto& o : v["data_offsets"])
      if (!o.is_number_unsigned()) throw fail("tensor \"" + name + "\" has a non-integer data offset");
    e.begin = v["data_offsets"][0].get<size_t>();
    e.end = v["data_offsets"][1].get<size_t>();
    ordered.emplace_back(name, e);
  }
  // Rule 4: sorted by offsets, each starting where the previous ended.
  std::sort(ordered.begin(), ordered.end(), [](const auto& a, const auto& b) {
    return std::tie(a.second.begin, a.second.end) < std::tie(b.second.begin, b.second.end);
  });
  size_t previous_end = 0;
  for (const auto& [name, e] : ordered) {
    if (e.begin != previous_end || e.end < e.begin)
      throw fail("tensor \"" + name + "\" has data offsets [" + std::to_string(e.begin) + ", " + std::to_string(e.end) +
                 "] that overlap or leave a gap (expected to start at " + std::to_string(previous_end) + ")");
    // Rule 5: exact byte size, with overflow checks.
    unsigned __int128 numel = 1;
    for (int64_t d : e.shape) {
      numel *= static_cast<uint64_t>(d);
      if (numel > (unsigned __int128)(1) << 62) throw fail("tensor \"" + name + "\" shape overflows");
    }
    if (numel * dtype_size(e.dtype) != e.end - e.begin)
      throw fail("tensor \"" + name + "\" holds " + std::to_string(e.end - e.begin) + " bytes but its shape and dtype need " +
                 std::to_string(static_cast<uint64_t>(numel * dtype_size(e.dtype))));
    previous_end = e.end;
    f.entries_[name] = e;
  }
  // Rule 6: the data section ends exactly at the end of the file.
  if (previous_end + 8 + n != size)
    throw fail("data section ends at byte " + std::to_string(previous_end + 8 + n) + " but the file has " +
               std::to_string(size) + " bytes (truncated or trailing data)");
  f.data_start_ = 8 + n;
  f.bytes_ = std::move(data);
  f.size_ = size;
  f.mapped_ = mapped;
  return f;
}

std::vector<std::string> SafetensorsFile::names() const {
  std::vector<std::string> out;
  for (const auto& [k, v] : entries_) out.push_back(k);
  return out;
}

const SafetensorsEntry& SafetensorsFile::entry(const std::string& name) const {
  auto it = entries_.find(name);
  if (it == entries_.end()) throw IoError(path_ + ": no tensor \"" + name + "\"");
  return it->second;
}

const uint8_t* SafetensorsFile::raw(const std::string& name) const {
  return bytes_.get() + data_start_ + entry(name).begin;
}

void SafetensorsFile::release(const std::string& name) const {
  if (!mapped_) return;
  const SafetensorsEntry& e = entry(name);
  // Whole pages inside the tensor's bytes only: its neighbours' pages stay.
  const uintptr_t page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  const uintptr_t begin = reinterpret_cast<uintptr_t>(bytes_.get() + data_start_ + e.begin);
  const uintptr_t end = reinterpret_cast<uintptr_t>(bytes_.get() + data_start_ + e.end);
  const uintptr_t first = (begin + page - 1) / page * page, last = end / page * page;
  if (last > first) ::madvise(reinterpret_cast<void*>(first), last - first, MADV_DONTNEED);
}

Tensor SafetensorsFile::tensor(const std::string& name) const {
  const SafetensorsEntry& e = entry(name);
  if (e.shape.size() > static_cast<size_t>(Shape::kMaxRank))
    throw FormatError(path_ + ": tensor \"" + name + "\" has rank " + std::to_string(e.shape.size()) + " (max 5)");
  Tensor t = Tensor::empty(Shape(e.shape));
  read_floats(name, t.data());
  return t;
}

namespace {
template <typename From, typename Convert>
void convert_run(const uint8_t* p, float* out, size_t n, Convert convert) {
  for (size_t i = 0; i < n; ++i) {
    From v;
    std::memcpy(&v, p + sizeof(From) * i, sizeof(From));
    out[i] = convert(v);
  }
}
}  // namespace

void SafetensorsFile::read_floats(const std::string& name, float* out) const {
  const SafetensorsEntry& e = entry(name);
  const uint8_t* p = raw(name);
  const size_t n = (e.end - e.begin) / dtype_size(e.dtype);
  auto cast = [](auto v) { return static_cast<float>(v); };
  switch (e.dtype) {
    case DType::kF32: std::memcpy(out, p, 4 * n); break;
    case DType::kF16: convert_run<uint16_t>(p, out, n, half_to_float); break;
    case DType::kBF16: convert_run<uint16_t>(p, out, n, bf16_to_float); break;
    case DType::kF64: convert_run<double>(p, out, n, cast); break;
    case DType::kI64: convert_run<int64_t>(p, out, n, cast); break;
    case DType::kI32: convert_run<int32_t>(p, out, n, cast); break;
    default:
      throw FormatError(path_ + ": tensor \"" + name + "\" has dtype " + dtype_name(e.dtype) +
                        ", which cannot be read as floating point");
  }
}

double SafetensorsFile::scalar(const std::string& name) const {
  const SafetensorsEntry& e = entry(name);
  size_t numel = 1;
  for (int64_t d : e.shape) numel *= d;
  if (numel != 1) throw FormatError(path_ + ": \"" + name + "\" is not a one-element tensor");
  const uint8_t* p = raw(name);
  if (e.dtype == DType::kF64) { double d; std::memcpy(&d, p, 8); return d; }
  if (e.dtype == DType::kI64) { int64_t v; std::memcpy(&v, p, 8); return static_cast<double>(v); }
  return tensor(name).item();
}

void write_safetensors(const std::string& path, const std::vector<SafetensorsTensor>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  std::vector<const SafetensorsTensor*> order;
  std::set<std::string> names;
  for (const auto& t : tensors) {
    if (!names.insert(t.name).second) throw ValueError(path + ": duplicate tensor name \"" + t.name + "\"");
    order.push_back(&t);
  }
  std::sort(order.begin(), order.end(), [](const SafetensorsTensor* a, const SafetensorsTensor* b) {
    const int ra = info(a->dtype).write_rank, rb = info(b->dtype).write_rank;
    return ra != rb ? ra < rb : a->name < b->name;
  });
  json header = json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  size_t offset = 0;
  for (const SafetensorsTensor* t : order) {
    if (t->dtype != DType::kF32 && t->dtype != DType::kF16 && t->dtype != DType::kBF16 && t->dtype != DType::kF64 &&
        t->dtype != DType::kI64)
      throw ValueError(std::string("cannot write dtype ") + dtype_name(t->dtype));
    const size_t bytes = static_cast<size_t>(t->value.numel()) * dtype_size(t->dtype);
    header[t->name] = {{"dtype", dtype_name(t->dtype)},
                       {"shape", t->value.shape().to_vector()},
                       {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  std::string h = header.dump();
  // Keys come out sorted (readers do not depend on order); pad so the data section starts 8-aligned.
  h.append((8 - h.size() % 8) % 8, ' ');
  std::string prefix(8, '\0');
  const uint64_t n = h.size();
  for (int i = 0; i < 8; ++i) prefix[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  // Streamed to the temp file a block of values at a time: a 3.4 GB UNet is never held a second time.
  write_through_temp_file(path, [&](const std::string& tmp) {
    const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) throw IoError(path + ": cannot create a temp file beside it: " + std::strerror(errno));
    auto put = [&](const char* p, size_t len) {
      while (len > 0) {
        const ssize_t w = ::write(fd, p, len);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
          const int err = errno;
          ::close(fd);
          throw IoError(path + ": write failed (" + std::strerror(err) + ")");
        }
        p += w;
        len -= static_cast<size_t>(w);
      }
    };
    put(prefix.data(), prefix.size());
    put(h.data(), h.size());
    constexpr int64_t kBlock = 1 << 16;
    std::vector<char> buf(static_cast<size_t>(kBlock) * 8);
    for (const SafetensorsTensor* t : order) {
      const float* v = t->value.data();
      const int64_t total = t->value.numel();
      const size_t size = dtype_size(t->dtype);
      for (int64_t b = 0; b < total; b += kBlock) {
        const int64_t m = std::min(kBlock, total - b);
        char* out = buf.data();
        for (int64_t i = 0; i < m; ++i) {
          const float x = v[b + i];
          switch (t->dtype) {
            case DType::kF32: std::memcpy(out + 4 * i, &x, 4); break;
            case DType::kF16: { const uint16_t q = float_to_half(x); std::memcpy(out + 2 * i, &q, 2); break; }
            case DType::kBF16: { const uint16_t q = float_to_bf16(x); std::memcpy(out + 2 * i, &q, 2); break; }
            case DType::kF64: { const double d = x; std::memcpy(out + 8 * i, &d, 8); break; }
            default: { const int64_t q = static_cast<int64_t>(std::llround(x)); std::memcpy(out + 8 * i, &q, 8); break; }
          }
        }
        put(out, static_cast<size_t>(m) * size);
      }
    }
    if (::close(fd) != 0) throw IoError(path + ": write failed (" + std::strerror(errno) + ")");
  });
}

}  // namespace lcd
