// What every tool's --version prints: the project version (CMake's project(VERSION)) and `git describe` of
// the tree it was built from ("unknown" outside a git checkout). Defined in a file generated at build time
// (cmake/version.cmake).
#pragma once
#include <string>

namespace lcd {

const char* lcdkit_version();  // "0.3.0"
const char* lcdkit_commit();   // "e9e264e" or "v0.3.0-4-g1a2b3c4-dirty"

// "<program> <version> (<commit>)", the line --version prints.
inline std::string version_line(const std::string& program) {
  return program + " " + lcdkit_version() + " (" + lcdkit_commit() + ")";
}

}  // namespace lcd
