#include "bench/resident_memory.h"

#include <fstream>
#include <string>

namespace lcd {

void reset_peak_resident() {
  std::ofstream("/proc/self/clear_refs") << "5";
}

namespace {
double status_gb(const char* field) {  // a "Name:   N kB" line of /proc/self/status
  std::ifstream in("/proc/self/status");
  const std::string prefix = std::string(field) + ":";
  for (std::string line; std::getline(in, line);)
    if (line.rfind(prefix, 0) == 0) return std::stod(line.substr(prefix.size())) * 1024 * 1e-9;
  return 0;
}
}  // namespace

double peak_resident_gb() { return status_gb("VmHWM"); }
double resident_gb() { return status_gb("VmRSS"); }

}  // namespace lcd
