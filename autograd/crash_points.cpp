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
  long count = 1;
  int signal = SIGKILL;  // SIGSTOP with ":stop": a process that hangs instead of dying
};
const Target* target() {
  static const Target* t = [] () -> const Target* {
    const char* env = std::getenv("LCDKIT_CRASH_AT");
    if (!env || !*env) return nullptr;
    std::string spec(env);
    auto* parsed = new Target;
    if (spec.size() > 5 && spec.compare(spec.size() - 5, 5, ":stop") == 0) {
      parsed->signal = SIGSTOP;
      spec.resize(spec.size() - 5);
    }
    const auto colon = spec.rfind(':');
    parsed->point = spec.substr(0, colon);
    if (colon != std::string::npos) parsed->count = std::atol(spec.c_str() + colon + 1);
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
  if (++hits == t->count) ::kill(::getpid(), t->signal);
}

}  // namespace lcd
