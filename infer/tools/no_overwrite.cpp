// Output-over-input refusal (see no_overwrite.h).
#include "infer/tools/no_overwrite.h"

#include <algorithm>
#include <filesystem>

#include "autograd/errors.h"

namespace lcd {

namespace fs = std::filesystem;

namespace {
fs::path resolved(const std::string& p) {
  std::error_code ec;
  fs::path r = fs::weakly_canonical(fs::absolute(p), ec);
  if (ec) r = fs::absolute(p).lexically_normal();
  // "dir/" and "dir" are one folder: drop the empty last component a trailing slash leaves.
  if (!r.empty() && r.filename().empty()) r = r.parent_path();
  return r;
}
}  // namespace

bool path_within(const std::string& inner, const std::string& outer) {
  const fs::path i = resolved(inner), o = resolved(outer);
  auto [oi, ii] = std::mismatch(o.begin(), o.end(), i.begin(), i.end());
  return oi == o.end();
}

void refuse_overwriting_inputs(const NamedPath& out, const std::vector<NamedPath>& inputs) {
  if (out.path.empty()) return;
  std::error_code ec;
  for (const auto& in : inputs) {
    if (in.path.empty()) continue;
    const bool folder = fs::is_directory(in.path, ec);
    const bool same = resolved(out.path) == resolved(in.path);
    if (same || (folder && path_within(out.path, in.path)))
      throw UsageError(out.what + " " + out.path + (same ? " is also " : " lies inside ") + in.what + " " + in.path +
                       "; lcdkit never overwrites an input");
  }
}

}  // namespace lcd
