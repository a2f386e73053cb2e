// The lcm-sample executable.
#include "infer/tools/lcm_sample.h"
#include "infer/tools/cli.h"

int main(int argc, char** argv) {
  return lcd::run_tool("lcm-sample", [&] { return lcd::lcm_sample_command(argc, argv); });
}
