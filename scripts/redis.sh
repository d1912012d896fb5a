#!/usr/bin/env bash
# Prints the redis-server binary the tests use (the replay store shared by replicas,
# internal/redistest), installing Debian's redis-server package first when it is missing
# (apt-get, as root). Tests read the path from TOKENSVC_REDIS_BIN; under CI=true a
# missing server fails them instead of skipping.
set -euo pipefail

if ! command -v redis-server >/dev/null; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    echo "redis.sh: installing redis-server" >&2
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-server >&2
  else
    echo "redis.sh: redis-server is missing and cannot be installed here (apt-get install redis-server as root)" >&2
    exit 1
  fi
fi
command -v redis-server
