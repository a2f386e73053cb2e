#include "bench/resident_memory.h"

#include <fstream>
#include <string>

namespace lcd {

void reset_peak_resident() {
  std::ofstream("/proc/self/clear_refs") << "5";
}

double peak_resident_gb() {
  std::ifstream in("/proc/self/status");
  for (std::string line; std::getline(in, line);)
    if (line.rfind("VmHWM:", 0) == 0) return std::stod(line.substr(6)) * 1024 * 1e-9;  // kB
  return 0;
}

}  // namespace lcd
