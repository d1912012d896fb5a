#!/usr/bin/env bash
# Static checks: gofmt, go vet, go.mod tidiness, and that the committed generated code is
# exactly what the spec generates.
set -euo pipefail
cd "$(dirname "$0")/.."

unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go' -not -path './.cache/*'))
if [ -n "$unformatted" ]; then
  echo "gofmt needed:"; echo "$unformatted"; exit 1
fi

go vet ./...

if ! go mod tidy -diff >/dev/null; then
  echo "go.mod/go.sum are not tidy; run: go mod tidy"; go mod tidy -diff || true; exit 1
fi

tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
for gen in $(grep -rl --include=generate.go '^//go:generate go tool oapi-codegen' .); do
  dir=$(dirname "$gen")
  # The directive names the config and the spec; the config names the committed output.
  read -r cfg spec < <(sed -n 's|^//go:generate go tool oapi-codegen -config \([^ ]*\) \(.*\)$|\1 \2|p' "$gen")
  out=$(sed -n 's|^output: *||p' "$dir/$cfg")
  # Same config, output redirected, so the committed file is compared, not overwritten.
  sed "s|^output:.*|output: $tmp/out.go|" "$dir/$cfg" > "$tmp/cfg.yaml"
  (cd "$dir" && go tool oapi-codegen -config "$tmp/cfg.yaml" "$spec")
  if ! cmp -s "$tmp/out.go" "$dir/$out"; then
    echo "$dir/$out is stale: run 'make generate' and commit the result"; exit 1
  fi
done
echo "checks passed"
