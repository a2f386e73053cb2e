// Fault injection for the crash-resume tests: a process started with LCDKIT_CRASH_AT=<point>:<n> kills itself
// with SIGKILL the n-th time it reaches crash_point("<point>"), exactly as `kill -9` would at that place
// (<point>:<n>:stop: stops itself with SIGSTOP there instead, a process that hangs). Unset
// (always, outside those tests), crash_point costs one branch on a cached flag.
#pragma once

namespace lcd {

void crash_point(const char* point);
// Whether LCDKIT_CRASH_AT names this point (so a writer can flush what a real crash would leave on disk).
bool crash_point_armed(const char* point);

}  // namespace lcd
