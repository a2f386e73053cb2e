// The one check every tool makes before it writes: no output may replace an input. Paths are compared after
// resolving "./", "..", symlinks and trailing slashes, so two spellings of one file are one file.
#pragma once
#include <string>
#include <vector>

namespace lcd {

// A path a tool reads or writes, with the flag or config key that named it (for the error line).
struct NamedPath {
  std::string what;  // "--lora", "output_dir", …
  std::string path;
};

// Throws UsageError "<out.what> <out.path> is also <in.what> <in.path>; …" when `out` is one of `inputs`, or
// lies inside an input that is a folder.
void refuse_overwriting_inputs(const NamedPath& out, const std::vector<NamedPath>& inputs);

// Whether `inner` is `outer` or lies inside it (both resolved as above).
bool path_within(const std::string& inner, const std::string& outer);

}  // namespace lcd
