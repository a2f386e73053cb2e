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

// `env`: variable assignments for the tool's environment ("NAME=value ..."), or empty.
inline CmdResult run_tool(const std::string& tool, const std::string& args, const std::string& env = "") {
  const std::string cmd = (env.empty() ? "" : "env " + env + " ") + std::string(LCDKIT_BINARY_DIR) + "/" + tool + " " + args + " 2>&1";
  FILE* pipe = popen(cmd.c_str(), "r");
  std::string out;
  char buf[4096];
  while (size_t n = fread(buf, 1, sizeof buf, pipe)) out.append(buf, n);
  const int status = pclose(pipe);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

}  // namespace lcd::testing
