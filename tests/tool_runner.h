// Runs one of lcdkit's built tools as a subprocess (stdout and stderr together) for end-to-end tests.
#pragma once
#include <sys/wait.h>

#include <cstdio>
#include <string>

namespace lcd::testing {

struct CmdResult {
  int status;          // exit status (-1 when killed)
  std::string output;  // stdout and stderr
};

// A shell command line, its stderr joined to its stdout.
inline CmdResult run_command(const std::string& command) {
  FILE* pipe = popen((command + " 2>&1").c_str(), "r");
  std::string out;
  char buf[4096];
  while (size_t n = fread(buf, 1, sizeof buf, pipe)) out.append(buf, n);
  const int status = pclose(pipe);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

// `env`: variable assignments for the tool's environment ("NAME=value ..."), or empty.
inline CmdResult run_tool(const std::string& tool, const std::string& args, const std::string& env = "") {
  return run_command((env.empty() ? "" : "env " + env + " ") + std::string(LCDKIT_BINARY_DIR) + "/" + tool + " " + args);
}

}  // namespace lcd::testing
