#!/usr/bin/env bash
# bench-storm.sh: the DESIGN §6 boot storm. Builds tokensvc and tokenbench, writes a
# throwaway self-signed loopback certificate, starts tokensvc over TLS on the embedded
# store in a temp dir on a free loopback port with its limits at their DEFAULTS, and runs
# `tokenbench storm`: DEVICES ES256 devices (own P-256 key each, registered through one
# streaming POST /devices/import), each doing one GET /token over a new TLS connection
# with a fresh assertion, WORKERS at a time; 429/503 with Retry-After are honoured and
# counted as refusals. With BASELINE=1 (default) the same storm first hits a bare TLS
# net/http handler in its own process. Loopback only; bounded: the service is stopped on
# exit and tokenbench runs under a deadline.
#
#   scripts/bench-storm.sh                       # 50000 devices, 128 at once, with baseline
#   DEVICES=5000 WORKERS=256 BASELINE=0 scripts/bench-storm.sh -json
#   REV=HEAD PERF_OUT=/tmp/storm.perf scripts/bench-storm.sh   # the committed service, profiled
# Extra arguments go to tokenbench storm.
set -euo pipefail

DEVICES=${DEVICES:-50000}
WORKERS=${WORKERS:-128}
BASELINE=${BASELINE:-1}
MAX_DURATION=${MAX_DURATION:-10m}
GO=${GO:-go}

root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
svc_pid=
perf_pid=
cleanup() {
	if [[ -n $perf_pid ]]; then kill -INT "$perf_pid" 2>/dev/null || true; fi
	if [[ -n $svc_pid ]] && kill -0 "$svc_pid" 2>/dev/null; then
		kill -TERM "$svc_pid" 2>/dev/null || true
		for _ in $(seq 100); do kill -0 "$svc_pid" 2>/dev/null || break; sleep 0.1; done
		kill -KILL "$svc_pid" 2>/dev/null || true
	fi
	rm -rf "$work"
}
trap cleanup EXIT

cd "$root"
# REV=<commit> builds tokensvc from that commit (git archive into the temp dir) instead
# of the working tree, e.g. to measure the committed service while it is being edited.
if [[ -n ${REV:-} ]]; then
	mkdir "$work/src"
	git archive "$REV" | tar -x -C "$work/src"
	(cd "$work/src" && CGO_ENABLED=0 $GO build -trimpath -o "$work/tokensvc" ./cmd/tokensvc)
	rm -rf "$work/src"
else
	CGO_ENABLED=0 $GO build -trimpath -o "$work/tokensvc" ./cmd/tokensvc
fi
CGO_ENABLED=0 $GO build -trimpath -o "$work/tokenbench" ./cmd/tokenbench

"$work/tokenbench" selfsigned -cert "$work/tls.crt" -key "$work/tls.key"
port=$("$work/tokenbench" freeport)
admin=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
url="https://127.0.0.1:$port"

# Defaults for everything that shapes the storm: per-device rate 0.2/s with burst 5,
# no global rate, at most 1024 requests in flight (503 + Retry-After beyond), the audit
# record per token on stdout (to a file here). Only the log level is lowered, so the
# access log does not write a line per request.
TOKENSVC_ADDR="127.0.0.1:$port" \
TOKENSVC_DATA_DIR="$work/data" \
TOKENSVC_ADMIN_TOKEN="$admin" \
TOKENSVC_TLS_CERT="$work/tls.crt" \
TOKENSVC_TLS_KEY="$work/tls.key" \
TOKENSVC_LOG_LEVEL=warn \
	"$work/tokensvc" >"$work/tokensvc.out" 2>"$work/tokensvc.err" &
svc_pid=$!

for _ in $(seq 100); do
	if curl -fsS --cacert "$work/tls.crt" -o /dev/null "$url/healthz" 2>/dev/null; then break; fi
	kill -0 "$svc_pid" 2>/dev/null || { cat "$work/tokensvc.err" >&2; exit 1; }
	sleep 0.1
done
curl -fsS --cacert "$work/tls.crt" -o /dev/null "$url/healthz"

baseline=()
if [[ $BASELINE == 1 ]]; then
	baseline=(-baseline -tls-cert "$work/tls.crt" -tls-key "$work/tls.key")
fi
# PERF_OUT=<file>: record tokensvc's CPU profile with perf (call graphs, 499 Hz) for the
# whole tokenbench run; read it with `perf report -i <file> --no-children`.
if [[ -n ${PERF_OUT:-} ]]; then
	perf record -F 499 -g -o "$PERF_OUT" -p "$svc_pid" 2>"$work/perf.err" &
	perf_pid=$!
	sleep 1
fi
echo "# $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(go version | cut -d' ' -f3)"
echo "# tokensvc ($(if [[ -n ${REV:-} ]]; then git rev-parse --short "$REV"; else echo "working tree of $(git rev-parse --short HEAD)"; fi)) pid $svc_pid on $url (embedded store, limits at defaults, audit to a file)"
echo "# tokenbench storm -devices $DEVICES -c $WORKERS -max-duration $MAX_DURATION ${baseline[*]:+-baseline} $*"
TOKENSVC_ADMIN_TOKEN="$admin" timeout 3600 "$work/tokenbench" storm -url "$url" -cacert "$work/tls.crt" \
	-server-pid "$svc_pid" -devices "$DEVICES" -c "$WORKERS" -max-duration "$MAX_DURATION" "${baseline[@]}" "$@"

if [[ -n $perf_pid ]]; then
	kill -INT "$perf_pid" 2>/dev/null || true
	wait "$perf_pid" || true
	perf_pid=
	echo "# perf profile of tokensvc in $PERF_OUT"
fi
echo "# audit records written: $(wc -l <"$work/tokensvc.out")"
if [[ -s $work/tokensvc.err ]]; then
	echo "# tokensvc stderr (warnings and errors, first 20 lines):" >&2
	head -20 "$work/tokensvc.err" >&2
fi
