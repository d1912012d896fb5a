#!/usr/bin/env bash
# The Helm chart's offline tests (helm/charttest, a nested Go module so that Helm and the
# Kubernetes API types stay out of the service's go.mod): schema, strict render and
# decode, lint, security properties, golden files. No helm binary or cluster needed.
# After an intended chart change: cd helm/charttest && go test ./... -update
set -euo pipefail
cd "$(dirname "$0")/../helm/charttest"

unformatted=$(gofmt -l .)
if [ -n "$unformatted" ]; then
  echo "gofmt needed in helm/charttest:"; echo "$unformatted"; exit 1
fi
if ! go mod tidy -diff >/dev/null; then
  echo "helm/charttest/go.mod is not tidy; run: cd helm/charttest && go mod tidy"; go mod tidy -diff || true; exit 1
fi
go vet ./...
go test -count=1 ./...
