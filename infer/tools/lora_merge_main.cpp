// The lora-merge executable.
#include "infer/tools/cli.h"
#include "infer/tools/lora_merge.h"

int main(int argc, char** argv) {
  return lcd::run_tool("lora-merge", [&] { return lcd::lora_merge_command(argc, argv); });
}
