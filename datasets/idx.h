// Reader for the idx format of (Fashion-)MNIST, gzipped or not: a big-endian magic 0x000008TT with the
// element type TT (0x08 = unsigned byte) and rank, then rank big-endian uint32 dimensions, then the data.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace lcd {

struct IdxArray {
  std::vector<int64_t> dims;
  std::vector<uint8_t> data;
};

// Throws IoError (missing file, corrupt or truncated gzip) or FormatError (bad magic, wrong sizes).
IdxArray read_idx(const std::string& path);

}  // namespace lcd
