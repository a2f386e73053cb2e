// idx reader through zlib's gz stream, which also reads uncompressed files transparently.
#include "datasets/idx.h"

#include <zlib.h>

#include <algorithm>
#include <memory>

#include "autograd/errors.h"

namespace lcd {

namespace {
struct GzCloser {
  void operator()(gzFile_s* f) const { gzclose(f); }
};

void read_exact(gzFile f, void* dst, size_t bytes, const std::string& path, const char* what) {
  size_t done = 0;
  auto* p = static_cast<unsigned char*>(dst);
  while (done < bytes) {
    const unsigned chunk = static_cast<unsigned>(std::min<size_t>(bytes - done, 1u << 30));
    const int got = gzread(f, p + done, chunk);
    if (got < 0) {
      int code = 0;
      const char* msg = gzerror(f, &code);
      throw IoError(path + ": corrupt gzip stream while reading " + what + " (" + msg + ")");
    }
    if (got == 0) throw IoError(path + ": truncated while reading " + what);
    done += static_cast<size_t>(got);
  }
}

uint32_t big_endian32(const unsigned char* b) {
  return (uint32_t(b[0]) << 24) | (uint32_t(b[1]) << 16) | (uint32_t(b[2]) << 8) | uint32_t(b[3]);
}
}  // namespace

IdxArray read_idx(const std::string& path) {
  std::unique_ptr<gzFile_s, GzCloser> f(gzopen(path.c_str(), "rb"));
  if (!f) throw IoError(path + ": cannot open idx file");
  unsigned char magic[4];
  read_exact(f.get(), magic, 4, path, "the magic number");
  if (magic[0] != 0 || magic[1] != 0 || magic[2] != 0x08)
    throw FormatError(path + ": not an unsigned-byte idx file (magic " + std::to_string(big_endian32(magic)) + ")");
  const int rank = magic[3];
  if (rank < 1 || rank > 4) throw FormatError(path + ": idx rank " + std::to_string(rank) + " is not 1..4");
  IdxArray out;
  constexpr int64_t kMaxBytes = int64_t{1} << 32;  // 4 GiB: ninety times Fashion-MNIST's training images
  int64_t count = 1;
  for (int i = 0; i < rank; ++i) {
    unsigned char b[4];
    read_exact(f.get(), b, 4, path, "the dimensions");
    out.dims.push_back(big_endian32(b));
    const int64_t d = out.dims.back();
    if (d != 0 && count > kMaxBytes / d) throw FormatError(path + ": idx dimensions are implausibly large");
    count *= d;  // no overflow: count · d ≤ 2^32
  }
  // Read in slices, so that memory grows with the data actually there, not with what the header claims.
  constexpr int64_t kSlice = int64_t{1} << 20;
  for (int64_t done = 0; done < count; done += kSlice) {
    const int64_t n = std::min(kSlice, count - done);
    out.data.resize(static_cast<size_t>(done + n));
    read_exact(f.get(), out.data.data() + done, static_cast<size_t>(n), path, "the data");
  }
  unsigned char extra;
  if (gzread(f.get(), &extra, 1) > 0) throw FormatError(path + ": trailing bytes after the idx data");
  return out;
}

}  // namespace lcd
