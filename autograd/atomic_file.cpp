// Atomic, durable file writes (see atomic_file.h).
#include "autograd/atomic_file.h"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <regex>

#include "autograd/errors.h"

namespace lcd {

namespace fs = std::filesystem;

namespace {

std::string temp_path_for(const std::string& path) {
  const fs::path target(path);
  return (target.parent_path() / ("." + target.filename().string() + ".tmp." + std::to_string(::getpid()))).string();
}

std::string folder_of(const std::string& path) {
  const fs::path parent = fs::path(path).parent_path();
  return parent.empty() ? "." : parent.string();
}

// fsync of a file or folder by path; a failure means the data may not be on disk.
void sync_path(const std::string& path, bool folder, const std::string& target) {
  const int fd = ::open(path.c_str(), (folder ? O_DIRECTORY : 0) | O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw IoError(target + ": cannot open " + path + " to flush it: " + std::strerror(errno));
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  if (rc != 0 && err != EINVAL) throw IoError(target + ": flushing " + path + " failed: " + std::strerror(err));
}

void commit(const std::string& temp, const std::string& path) {
  std::error_code ec;
  try {
    sync_path(temp, false, path);
  } catch (...) {
    fs::remove(temp, ec);
    throw;
  }
  fs::rename(temp, path, ec);
  if (ec) {
    std::error_code ignored;
    fs::remove(temp, ignored);
    throw IoError(path + ": cannot move the finished file into place: " + ec.message());
  }
  sync_path(folder_of(path), true, path);
}

}  // namespace

void write_through_temp_file(const std::string& path, const std::function<void(const std::string&)>& write) {
  const std::string tmp = temp_path_for(path);
  std::error_code made;
  fs::create_directories(folder_of(path), made);  // an output's folder is made when the output is written
  try {
    write(tmp);
  } catch (...) {
    std::error_code ec;
    fs::remove(tmp, ec);
    throw;
  }
  commit(tmp, path);
}

void write_file_atomically(const std::string& path, const std::string& bytes) {
  write_through_temp_file(path, [&](const std::string& tmp) {
    const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) throw IoError(path + ": cannot create a file in " + folder_of(path) + ": " + std::strerror(errno));
    size_t done = 0;
    while (done < bytes.size()) {
      const ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        const int err = errno;
        ::close(fd);
        throw IoError(path + ": write failed (" + std::strerror(err) + ")");
      }
      done += static_cast<size_t>(n);
    }
    if (::close(fd) != 0) throw IoError(path + ": write failed (" + std::strerror(errno) + ")");
  });
}

int remove_stale_temp_files(const std::string& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return 0;
  static const std::regex pattern(R"(\..+\.tmp\.(\d+))");
  int removed = 0;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    std::smatch m;
    const std::string name = e.path().filename().string();
    if (!std::regex_match(name, m, pattern)) continue;
    const long pid = std::stol(m[1]);
    if (pid == ::getpid() || (pid > 0 && ::kill(static_cast<pid_t>(pid), 0) == 0)) continue;  // a live writer
    if (fs::remove(e.path(), ec)) ++removed;
  }
  return removed;
}

}  // namespace lcd
