#!/usr/bin/env bash
# Runs every Fuzz target in the module for the given -fuzztime each: an iteration count
# such as 50000x (the default) or a duration such as 30s.
set -euo pipefail
cd "$(dirname "$0")/.."
fuzztime=${1:-50000x}
grep -rl --include='*_test.go' '^func Fuzz' . | while read -r f; do
  pkg="./$(dirname "${f#./}")"
  for target in $(grep -o '^func Fuzz[A-Za-z0-9_]*' "$f" | cut -d' ' -f2); do
    echo "fuzz $pkg $target ($fuzztime)"
    go test -run='^$' -fuzz="^${target}\$" -fuzztime="$fuzztime" "$pkg"
  done
done
