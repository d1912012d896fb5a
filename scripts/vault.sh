#!/usr/bin/env bash
# Builds the Vault server from tools/vault once, caches it outside the repository, and
# prints its path. Rebuilds only when tools/vault/go.sum (the pinned versions) changes.
set -euo pipefail
cd "$(dirname "$0")/.."
cache=${TOKENSVC_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/tokensvc}
version=$(awk '$1 == "require" && $2 == "github.com/hashicorp/vault" {print $3}' tools/vault/go.mod)
sum=$(sha256sum tools/vault/go.sum tools/vault/main.go | sha256sum | cut -c1-12)
bin="$cache/vault-$version-$sum/vault"
if [ ! -x "$bin" ]; then
  echo "building Vault $version into $bin (first time only; downloads and compiles for minutes)" >&2
  mkdir -p "$(dirname "$bin")"
  (cd tools/vault && CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o "$bin.tmp" .)
  mv "$bin.tmp" "$bin"
fi
echo "$bin"
