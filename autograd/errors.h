// Typed exceptions thrown by the library; only a tool's main() prints them and exits (DESIGN.md §8.4).
#pragma once
#include <stdexcept>
#include <string>

namespace lcd {

// Base of every lcdkit error; what() is one line naming what went wrong and where.
struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};
struct ShapeError : Error { using Error::Error; };   // tensor shapes that do not fit together
struct ValueError : Error { using Error::Error; };   // a bad argument value (NaN, out of range)
struct IoError : Error { using Error::Error; };      // missing, unreadable or corrupt files
struct FormatError : IoError { using IoError::IoError; };  // a file that parses but breaks its format
struct ConfigError : Error { using Error::Error; };  // bad configuration keys or values
struct AutogradError : Error { using Error::Error; };  // misuse of the tape
struct UsageError : Error { using Error::Error; };     // bad command-line flags

}  // namespace lcd
