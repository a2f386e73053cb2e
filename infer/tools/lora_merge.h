// lora-merge: exact, verifiable LoRA arithmetic on adapter files (DESIGN.md §7): combine, fold, extract,
// convert, inspect. The command is a library function so tests can call it; lora_merge_main.cpp wraps it.
#pragma once

namespace lcd {

int lora_merge_command(int argc, char** argv);

}  // namespace lcd
