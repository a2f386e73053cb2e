// Atomic file writes (see atomic_file.h).
#include "autograd/atomic_file.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "autograd/errors.h"

namespace lcd {

namespace fs = std::filesystem;

std::string temp_path_for(const std::string& path) {
  const fs::path target(path);
  return (target.parent_path() / ("." + target.filename().string() + ".tmp." + std::to_string(::getpid()))).string();
}

void commit_temp_file(const std::string& temp, const std::string& path) {
  std::error_code ec;
  fs::rename(temp, path, ec);
  if (ec) {
    fs::remove(temp, ec);
    throw IoError(path + ": cannot move the finished file into place: " + ec.message());
  }
}

void write_file_atomically(const std::string& path, const std::string& bytes) {
  const std::string tmp = temp_path_for(path);
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) throw IoError(path + ": cannot create a file in " + fs::path(path).parent_path().string());
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    out.flush();
    if (!out) {
      std::error_code ec;
      fs::remove(tmp, ec);
      throw IoError(path + ": write failed (disk full?)");
    }
  }
  commit_temp_file(tmp, path);
}

}  // namespace lcd
