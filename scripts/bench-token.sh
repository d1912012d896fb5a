#!/usr/bin/env bash
# bench-token.sh: GET /token throughput and latency, tokensvc next to a bare net/http
# baseline, in one run (DESIGN §6). Builds tokensvc and tokenbench, starts tokensvc on the
# embedded store in a temp dir on a free loopback port with limits out of the way and the
# audit off, provisions DEVICES HS256 devices, measures, stops the service.
# Loopback only; bounded: the service is killed on exit and the whole run has a deadline.
#
#   scripts/bench-token.sh                 # 200 devices, 32 workers, 15 s per phase
#   DEVICES=500 WORKERS=64 DURATION=30s scripts/bench-token.sh -json
# Extra arguments go to tokenbench.
set -euo pipefail

DEVICES=${DEVICES:-200}
WORKERS=${WORKERS:-32}
DURATION=${DURATION:-15s}
WARMUP=${WARMUP:-2s}
GO=${GO:-go}

root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
svc_pid=
cleanup() {
	if [[ -n $svc_pid ]] && kill -0 "$svc_pid" 2>/dev/null; then
		kill -TERM "$svc_pid" 2>/dev/null || true
		for _ in $(seq 50); do kill -0 "$svc_pid" 2>/dev/null || break; sleep 0.1; done
		kill -KILL "$svc_pid" 2>/dev/null || true
	fi
	rm -rf "$work"
}
trap cleanup EXIT

cd "$root"
CGO_ENABLED=0 $GO build -trimpath -o "$work/tokensvc" ./cmd/tokensvc
CGO_ENABLED=0 $GO build -trimpath -o "$work/tokenbench" ./cmd/tokenbench

port=$("$work/tokenbench" freeport)
admin=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
url="http://127.0.0.1:$port"

# Limits out of the way: no per-device or global rate limit, no in-flight bound; the
# audit record per token off (it is a write per request to stdout); only warnings logged.
TOKENSVC_ADDR="127.0.0.1:$port" \
TOKENSVC_DATA_DIR="$work/data" \
TOKENSVC_ADMIN_TOKEN="$admin" \
TOKENSVC_DEVICE_RATE=0 \
TOKENSVC_GLOBAL_RATE=0 \
TOKENSVC_MAX_INFLIGHT=0 \
TOKENSVC_AUDIT=off \
TOKENSVC_LOG_LEVEL=warn \
	"$work/tokensvc" >"$work/tokensvc.out" 2>"$work/tokensvc.err" &
svc_pid=$!

for _ in $(seq 100); do
	if curl -fsS -o /dev/null "$url/healthz" 2>/dev/null; then break; fi
	kill -0 "$svc_pid" 2>/dev/null || { cat "$work/tokensvc.err" >&2; exit 1; }
	sleep 0.1
done
curl -fsS -o /dev/null "$url/healthz"

echo "# $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(go version | cut -d' ' -f3)"
echo "# tokensvc pid $svc_pid on $url; tokenbench -provision $DEVICES -c $WORKERS -d $DURATION -warmup $WARMUP $*"
TOKENSVC_ADMIN_TOKEN="$admin" timeout 600 "$work/tokenbench" -url "$url" -server-pid "$svc_pid" \
	-provision "$DEVICES" -c "$WORKERS" -d "$DURATION" -warmup "$WARMUP" "$@"

if [[ -s $work/tokensvc.err ]]; then
	echo "# tokensvc stderr (warnings and errors):" >&2
	head -20 "$work/tokensvc.err" >&2
fi
