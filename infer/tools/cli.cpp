// Command-line parsing for the tools (see cli.h).
#include "infer/tools/cli.h"

#include <cerrno>
#include <cctype>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <cstdio>
#include <iostream>
#include <sstream>

#include "autograd/cpu/precision.h"
#include "autograd/errors.h"
#include "autograd/threads.h"
#include "infer/tools/version.h"

namespace lcd {

ArgParser::ArgParser(std::string program, std::string synopsis, std::string description)
    : program_(std::move(program)), synopsis_(std::move(synopsis)), description_(std::move(description)) {}

void ArgParser::option(const std::string& name, const std::string& metavar, const std::string& help, std::string* out) {
  options_.push_back({name, metavar, help, out, nullptr, nullptr, false});
}
void ArgParser::repeated(const std::string& name, const std::string& metavar, const std::string& help,
                         std::vector<std::string>* out) {
  options_.push_back({name, metavar, help, nullptr, out, nullptr, false});
}
void ArgParser::flag(const std::string& name, const std::string& help, bool* out) {
  options_.push_back({name, "", help, nullptr, nullptr, out, false});
}
void ArgParser::positional(const std::string& name, const std::string& help, std::string* out, bool required) {
  positionals_.push_back({name, "", help, out, nullptr, nullptr, required});
}
void ArgParser::rest(const std::string& name, const std::string& help, std::vector<std::string>* out) {
  rest_ = {name, "", help, nullptr, out, nullptr, false};
}

void ArgParser::threads(std::string* out, const std::string& extra_help) {
  option("--threads", "N",
         "threads for OpenMP and the GEMM kernels (default: all cores, or OMP_NUM_THREADS)" + extra_help, out);
}

void apply_threads(const std::string& value) {
  if (!value.empty()) set_num_threads(parse_int("--threads", value, 1, 4096));
}

bool ArgParser::given(const std::string& name) const {
  for (const auto& g : given_)
    if (g == name) return true;
  return false;
}

bool ArgParser::parse(int argc, char** argv) { return parse(std::vector<std::string>(argv + 1, argv + argc)); }

bool ArgParser::parse(const std::vector<std::string>& args) {
  size_t next_positional = 0;
  bool options_ended = false;  // after "--" every argument is a positional, even one that starts with "--"
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (!options_ended && a == "--") {
      options_ended = true;
      continue;
    }
    if (!options_ended && (a == "--help" || a == "-h")) {
      std::cout << help();
      return false;
    }
    if (!options_ended && a == "--version") {
      std::cout << version_line(program_) << "\n";
      return false;
    }
    if (!options_ended && a.size() > 2 && a.compare(0, 2, "--") == 0) {
      std::string name = a, value;
      bool has_value = false;
      if (auto eq = a.find('='); eq != std::string::npos) {
        name = a.substr(0, eq);
        value = a.substr(eq + 1);
        has_value = true;
      }
      const Spec* spec = nullptr;
      for (const auto& o : options_)
        if (o.name == name) spec = &o;
      if (!spec) throw UsageError("unknown option " + name);
      given_.push_back(name);
      if (spec->flag) {
        if (has_value) throw UsageError(name + " takes no value");
        *spec->flag = true;
        continue;
      }
      if (!has_value) {
        if (i + 1 >= args.size()) throw UsageError(name + " needs a value (" + spec->metavar + ")");
        value = args[++i];
      }
      if (value.empty()) throw UsageError(name + " needs a value (" + spec->metavar + "), got an empty one");
      if (spec->values)
        spec->values->push_back(value);
      else
        *spec->value = value;
      continue;
    }
    if (next_positional < positionals_.size()) {
      *positionals_[next_positional++].value = a;
    } else if (rest_.values) {
      rest_.values->push_back(a);
    } else {
      throw UsageError("unexpected argument \"" + a + "\"");
    }
  }
  for (size_t k = next_positional; k < positionals_.size(); ++k)
    if (positionals_[k].required) throw UsageError("missing " + positionals_[k].name);
  return true;
}

std::string ArgParser::help() const {
  std::ostringstream out;
  out << "usage: " << program_ << " " << synopsis_ << "\n\n" << description_ << "\n";
  if (!positionals_.empty() || rest_.values) {
    out << "\narguments:\n";
    for (const auto& p : positionals_) out << "  " << p.name << "\n      " << p.help << "\n";
    if (rest_.values) out << "  " << rest_.name << "\n      " << rest_.help << "\n";
  }
  out << "\noptions:\n";
  for (const auto& o : options_) {
    out << "  " << o.name << (o.metavar.empty() ? "" : " " + o.metavar) << "\n      " << o.help;
    if (o.value && !o.value->empty()) out << " (default: " << *o.value << ")";
    out << "\n";
  }
  out << "  --help\n      show this help and exit\n";
  out << "  --version\n      show the version and the commit it was built from, and exit\n";
  out << "  --\n      end of options: every later argument is a file or value, even one starting with --\n";
  return out.str();
}

int parse_int(const std::string& flag, const std::string& text, int min, int max) {
  const std::string range = "[" + std::to_string(min) + ", " + std::to_string(max) + "]";
  errno = 0;
  char* end = nullptr;
  const long long v = std::strtoll(text.c_str(), &end, 10);
  if (text.empty() || std::isspace(static_cast<unsigned char>(text[0])) || *end != '\0')
    throw UsageError(flag + " expects an integer, got \"" + text + "\"");
  if (errno == ERANGE || v < min || v > max)
    throw UsageError(flag + " " + text + " is out of range " + range);
  return static_cast<int>(v);
}

uint64_t parse_seed(const std::string& flag, const std::string& text) {
  errno = 0;
  char* end = nullptr;
  const unsigned long long v = std::strtoull(text.c_str(), &end, 10);
  if (text.empty() || !std::isdigit(static_cast<unsigned char>(text[0])) || *end != '\0')
    throw UsageError(flag + " expects a non-negative integer, got \"" + text + "\"");
  if (errno == ERANGE) throw UsageError(flag + " " + text + " is out of range [0, 2^64 - 1]");
  return v;
}

double parse_double(const std::string& flag, const std::string& text) {
  errno = 0;
  char* end = nullptr;
  const double v = std::strtod(text.c_str(), &end);
  if (text.empty() || std::isspace(static_cast<unsigned char>(text[0])) || *end != '\0')
    throw UsageError(flag + " expects a number, got \"" + text + "\"");
  if (!std::isfinite(v) || errno == ERANGE) throw UsageError(flag + " " + text + " is not a finite number");
  return v;
}

std::pair<std::string, double> parse_weighted_path(const std::string& flag, const std::string& text) {
  const auto colon = text.rfind(':');
  std::error_code ec;
  if (colon == std::string::npos || colon == 0 || std::filesystem::exists(text, ec)) return {text, 1.0};
  const std::string path = text.substr(0, colon), tail = text.substr(colon + 1);
  char* end = nullptr;
  const double w = std::strtod(tail.c_str(), &end);
  if (!tail.empty() && *end == '\0' && std::isfinite(w)) return {path, w};
  if (std::filesystem::exists(path, ec))
    throw UsageError(flag + " " + text + ": the weight \"" + tail + "\" after the colon is not a finite number");
  return {text, 1.0};  // neither spelling exists: the reader reports the missing file
}

namespace {
// Every error is one line: a message that carries newlines (a library's) is folded.
std::string one_line(std::string m) {
  for (char& ch : m)
    if (ch == '\n' || ch == '\r') ch = ' ';
  return m;
}
}  // namespace

int run_tool(const std::string& program, const std::function<int()>& body) {
  try {
    return body();
  } catch (const UsageError& e) {
    std::cerr << program << ": error: " << one_line(e.what()) << " (see " << program << " --help)\n";
    return 2;
  } catch (const Error& e) {
    std::cerr << program << ": error: " << one_line(e.what()) << "\n";
    return 1;
  } catch (const std::bad_alloc&) {
    std::cerr << program << ": error: out of memory (the inputs or settings ask for more memory than this machine has)\n";
    return 1;
  } catch (const std::filesystem::filesystem_error& e) {
    std::cerr << program << ": error: " << one_line(e.what()) << "\n";
    return 1;
  } catch (const std::exception& e) {
    // Not an lcdkit error: a check is missing somewhere. Still one line, and marked as such.
    std::cerr << program << ": error: internal error, please report: " << one_line(e.what()) << "\n";
    return 1;
  }
}

const char* apply_precision(const std::string& value, const std::string& program, const std::string& what) {
  const Precision wanted = value.empty() || value == "auto" ? default_precision() : parse_precision(value, what);
  std::string notice;
  const Precision p = resolve_precision(wanted, &notice);
  if (!notice.empty()) std::fprintf(stderr, "%s: %s\n", program.c_str(), notice.c_str());
  set_compute_precision(p);
  return precision_name(p);
}

}  // namespace lcd
