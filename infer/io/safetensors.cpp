// safetensors reading (with the reference reader's validation) and atomic writing.
#include "infer/io/safetensors.h"

#include <unistd.h>

#include <algorithm>
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
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) throw IoError(path + ": cannot open safetensors file");
  const std::streamsize size = in.tellg();
  in.seekg(0);
  std::vector<uint8_t> bytes(static_cast<size_t>(size));
  if (size > 0 && !in.read(reinterpret_cast<char*>(bytes.data()), size)) throw IoError(path + ": read failed");
  return parse(std::move(bytes), path);
}

SafetensorsFile SafetensorsFile::parse(std::vector<uint8_t> bytes, const std::string& origin) {
  auto fail = [&](const std::string& why) { return FormatError(origin + ": invalid safetensors: " + why); };
  SafetensorsFile f;
  f.path_ = origin;
  // Rule 1-2: header length.
  if (bytes.size() < 8) throw fail("file shorter than the 8-byte header length");
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | bytes[i];
  if (n > kMaxHeaderSize) throw fail("header length " + std::to_string(n) + " exceeds 100,000,000 bytes");
  if (n + 8 > bytes.size()) throw fail("header length " + std::to_string(n) + " runs past the end of the file");
  // Rule 3: UTF-8 JSON of the expected structure; duplicate keys rejected explicitly.
  const std::string header(reinterpret_cast<const char*>(bytes.data() + 8), n);
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
  if (previous_end + 8 + n != bytes.size())
    throw fail("data section ends at byte " + std::to_string(previous_end + 8 + n) + " but the file has " +
               std::to_string(bytes.size()) + " bytes (truncated or trailing data)");
  f.data_start_ = 8 + n;
  f.bytes_ = std::move(bytes);
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
  return bytes_.data() + data_start_ + entry(name).begin;
}

Tensor SafetensorsFile::tensor(const std::string& name) const {
  const SafetensorsEntry& e = entry(name);
  if (e.shape.size() > static_cast<size_t>(Shape::kMaxRank))
    throw FormatError(path_ + ": tensor \"" + name + "\" has rank " + std::to_string(e.shape.size()) + " (max 5)");
  Tensor t = Tensor::empty(Shape(e.shape));
  const uint8_t* p = raw(name);
  float* out = t.data();
  const int64_t n = t.numel();
  for (int64_t i = 0; i < n; ++i) {
    switch (e.dtype) {
      case DType::kF32: std::memcpy(&out[i], p + 4 * i, 4); break;
      case DType::kF16: { uint16_t h; std::memcpy(&h, p + 2 * i, 2); out[i] = half_to_float(h); break; }
      case DType::kBF16: { uint16_t h; std::memcpy(&h, p + 2 * i, 2); out[i] = bf16_to_float(h); break; }
      case DType::kF64: { double d; std::memcpy(&d, p + 8 * i, 8); out[i] = static_cast<float>(d); break; }
      case DType::kI64: { int64_t v; std::memcpy(&v, p + 8 * i, 8); out[i] = static_cast<float>(v); break; }
      case DType::kI32: { int32_t v; std::memcpy(&v, p + 4 * i, 4); out[i] = static_cast<float>(v); break; }
      default:
        throw FormatError(path_ + ": tensor \"" + name + "\" has dtype " + dtype_name(e.dtype) +
                          ", which cannot be read as floating point");
    }
  }
  return t;
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
  std::string data;
  for (const SafetensorsTensor* t : order) {
    const size_t begin = data.size();
    const float* v = t->value.data();
    const int64_t n = t->value.numel();
    for (int64_t i = 0; i < n; ++i) {
      char buf[8];
      size_t len = dtype_size(t->dtype);
      switch (t->dtype) {
        case DType::kF32: std::memcpy(buf, &v[i], 4); break;
        case DType::kF16: { uint16_t h = float_to_half(v[i]); std::memcpy(buf, &h, 2); break; }
        case DType::kBF16: { uint16_t h = float_to_bf16(v[i]); std::memcpy(buf, &h, 2); break; }
        case DType::kF64: { double d = v[i]; std::memcpy(buf, &d, 8); break; }
        case DType::kI64: { int64_t x = static_cast<int64_t>(std::llround(v[i])); std::memcpy(buf, &x, 8); break; }
        default: throw ValueError(std::string("cannot write dtype ") + dtype_name(t->dtype));
      }
      data.append(buf, len);
    }
    header[t->name] = {{"dtype", dtype_name(t->dtype)},
                       {"shape", t->value.shape().to_vector()},
                       {"data_offsets", {begin, data.size()}}};
  }
  std::string h = header.dump();
  // Keys come out sorted (readers do not depend on order); pad so the data section starts 8-aligned.
  h.append((8 - h.size() % 8) % 8, ' ');
  std::string bytes(8, '\0');
  uint64_t n = h.size();
  for (int i = 0; i < 8; ++i) bytes[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  write_file_atomically(path, bytes + h + data);
}

}  // namespace lcd
