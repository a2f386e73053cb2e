// Fault injection (see crash_points.h).
#include "autograd/crash_points.h"

#include <signal.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <string>

namespace lcd {

namespace {
struct Target {
  std::string point;
  long count = 0;
};
const Target* target() {
  static const Target* t = [] () -> const Target* {
    const char* env = std::getenv("LCDKIT_CRASH_AT");
    if (!env || !*env) return nullptr;
    const std::string spec(env);
    const auto colon = spec.rfind(':');
    auto* parsed = new Target{spec.substr(0, colon), colon == std::string::npos ? 1 : std::atol(spec.c_str() + colon + 1)};
    return parsed;
  }();
  return t;
}
}  // namespace

bool crash_point_armed(const char* point) {
  const Target* t = target();
  return t && t->point == point;
}

void crash_point(const char* point) {
  const Target* t = target();
  if (!t || t->point != point) return;
  static long hits = 0;
  if (++hits == t->count) ::kill(::getpid(), SIGKILL);
}

}  // namespace lcd
