#!/usr/bin/env bash
# `cmake --install` into a fresh prefix: the installed tools run from there (their RPATH finds the installed
# library, not the build tree's) and print their version, and each has a man page naming its options.
# Usage: install_tree_test.sh BUILD_DIR
set -euo pipefail
build="$1"
prefix=$(mktemp -d)
trap 'rm -rf "$prefix"' EXIT
cmake --install "$build" --prefix "$prefix" > /dev/null
for tool in lcm-sample lora-merge lcd-train; do
  out=$(env -u LD_LIBRARY_PATH "$prefix/bin/$tool" --version)
  case "$out" in "$tool "[0-9]*) ;; *) echo "FAIL: $tool --version printed: $out"; exit 1 ;; esac
  if ldd "$prefix/bin/$tool" | grep -q "$build"; then echo "FAIL: $tool loads a library from the build tree"; exit 1; fi
  if [ -n "$(command -v help2man)" ]; then
    page="$prefix/share/man/man1/$tool.1"
    [ -s "$page" ] || { echo "FAIL: no man page $page"; exit 1; }
    grep -q -- 'threads for OpenMP' "$page" || { echo "FAIL: $page does not document --threads"; exit 1; }
  fi
done
echo "install tree: 3 tools run from $prefix with their man pages"
