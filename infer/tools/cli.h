// A small command-line parser shared by the tools (lcm-sample, lora-merge, lcd-train): --name VALUE or
// --name=VALUE options, repeatable options, boolean flags, positionals, "--" ending the options, and
// generated --help and --version. Bad flags throw
// UsageError; run_tool() turns any lcdkit error into one "tool: error: …" line and a non-zero exit.
#pragma once
#include <cstdint>
#include <functional>
#include <limits>
#include <string>
#include <vector>

namespace lcd {

class ArgParser {
 public:
  ArgParser(std::string program, std::string synopsis, std::string description);
  void option(const std::string& name, const std::string& metavar, const std::string& help, std::string* out);
  void repeated(const std::string& name, const std::string& metavar, const std::string& help,
                std::vector<std::string>* out);
  void flag(const std::string& name, const std::string& help, bool* out);
  // Positionals are filled in order; the last may take all remaining arguments when `rest` is set.
  void positional(const std::string& name, const std::string& help, std::string* out, bool required = true);
  void rest(const std::string& name, const std::string& help, std::vector<std::string>* out);
  // The one thread knob, --threads N, with the same help and default (all cores) in every tool; apply the
  // value with apply_threads after parse.
  void threads(std::string* out, const std::string& extra_help = "");
  // Returns false when --help or --version was asked for (then printed). "--" ends the options.
  bool parse(int argc, char** argv);
  bool parse(const std::vector<std::string>& args);
  std::string help() const;
  bool given(const std::string& name) const;  // whether an option or flag appeared

 private:
  struct Spec {
    std::string name, metavar, help;
    std::string* value = nullptr;
    std::vector<std::string>* values = nullptr;
    bool* flag = nullptr;
    bool required = true;
  };
  std::string program_, synopsis_, description_;
  std::vector<Spec> options_, positionals_;
  Spec rest_;
  std::vector<std::string> given_;
};

// Number parsing for flag values, range-checked (no wrap-around); the error names the flag, the value and the range.
int parse_int(const std::string& flag, const std::string& text, int min = std::numeric_limits<int>::min(),
              int max = std::numeric_limits<int>::max());
uint64_t parse_seed(const std::string& flag, const std::string& text);  // 0 .. 2^64 − 1
double parse_double(const std::string& flag, const std::string& text);  // finite
// "FILE" or "FILE:WEIGHT" (weight defaults to 1). A colon that is part of an existing file's name stays in the
// path; "FILE:abc" where FILE exists is a UsageError about the weight.
std::pair<std::string, double> parse_weighted_path(const std::string& flag, const std::string& text);

// The --precision flag / train.precision value: "fp32", "bf16" or "" / "auto" (the default: bf16 where the
// CPU computes it natively, else fp32). Sets the process precision, prints one line on stderr when bf16 was
// asked for but runs fp32, and returns what runs; `what` names the flag or key in errors.
const char* apply_precision(const std::string& value, const std::string& program, const std::string& what);
inline constexpr const char* kPrecisionHelp =
    "GEMM operand precision: fp32, bf16 (AMX-BF16 / AVX512-BF16; fp32 elsewhere) or auto (the default: bf16 "
    "where the CPU has AMX-BF16 or AVX512-BF16, else fp32)";

// Sets the thread count from a --threads value: empty keeps the default (all cores, or OMP_NUM_THREADS).
void apply_threads(const std::string& value);

// Runs a tool's body; lcdkit errors print "<program>: error: <message>" and return 1, usage errors add a
// hint to run --help and return 2.
int run_tool(const std::string& program, const std::function<int()>& body);

}  // namespace lcd
