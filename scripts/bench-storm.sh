#!/usr/bin/env bash
# bench-storm.sh: the DESIGN §6 boot storm. Builds tokensvc and tokenbench, writes a
# throwaway self-signed loopback certificate, starts tokensvc over TLS on a free loopback
# port with its limits at their DEFAULTS, and runs `tokenbench storm`: DEVICES ES256
# devices (own P-256 key each, registered through one streaming POST /devices/import),
# each doing one GET /token over a new TLS connection with a fresh assertion, WORKERS at
# a time; 429/503 with Retry-After are honoured and counted as refusals. With BASELINE=1
# (default) the same storm first hits a bare TLS net/http handler in its own process.
# STORE picks tokensvc's store:
#   embedded (default)  the embedded file store in the temp dir
#   vault               a Vault dev server prepared as in bench-vault.sh (KV v2, Transit,
#                       the deploy/vault/tokensvc.hcl policy token), key cache at its
#                       defaults; the devices' keys are on a KV hub, so every device's
#                       first GET /token is a key-cache miss and one Vault read.
#                       The Vault call deadline on the token path is the service's
#                       (TOKENSVC_VAULT_TIMEOUT, 250ms) unless set in the environment;
#                       under the storm on 2 shared cores a few reads exceed it and are
#                       refused with 503 + Retry-After (retried, counted as refusals).
# Loopback only; bounded: tokensvc (and Vault) are stopped on exit and tokenbench runs
# under a deadline.
#
#   scripts/bench-storm.sh                       # 50000 devices, 128 at once, with baseline
#   DEVICES=5000 WORKERS=256 BASELINE=0 scripts/bench-storm.sh -json
#   REV=HEAD PERF_OUT=/tmp/storm.perf scripts/bench-storm.sh   # the committed service, profiled
#   PPROF_OUT=/tmp/prof scripts/bench-storm.sh   # + tokensvc's own CPU and alloc profiles of
#                                                # (the first 20 s of) its storm, -pprof-seconds
#                                                # to change; /tmp/prof/storm.{cpu,allocs}.pprof; the bare
#                                                # handler's whole run: baseline.cpu.pprof
#   STORE=vault scripts/bench-storm.sh           # on Vault
# Extra arguments go to tokenbench storm.
#
# STORE=vault at the default 50,000 devices on the 2-core VM of BENCHMARKS.md (2026-11-22,
# tokensvc e29f5a1, all service defaults): the import into Vault took 274.5 s (~180
# devices/s), the whole script 6 min 22 s. tokensvc served all 50,000 in 76.2 s (657/s,
# baseline 1,867/s) with 14,040 refusals (503 + Retry-After: Vault reads past 250 ms,
# then the key cache refusing lookups until its next probe) and 55,240 Vault reads
# (one per device plus re-reads on retry). With TOKENSVC_VAULT_TIMEOUT=2s (57c3c3a):
# import 239.5 s, 840 devices/s, no refusals, 50,001 Vault reads.
set -euo pipefail

DEVICES=${DEVICES:-50000}
WORKERS=${WORKERS:-128}
BASELINE=${BASELINE:-1}
MAX_DURATION=${MAX_DURATION:-10m}
STORE=${STORE:-embedded}

. "$(dirname "$0")/bench-lib.sh"
case $STORE in
embedded | vault) ;;
*) echo "bench-storm.sh: STORE=$STORE: want embedded or vault" >&2; exit 2 ;;
esac
bench_init
bench_build
bench_pprof
"$work/tokenbench" selfsigned -cert "$work/tls.crt" -key "$work/tls.key"

# Defaults for everything that shapes the storm: per-device rate 0.2/s with burst 5,
# no global rate, at most 1024 requests in flight (503 + Retry-After beyond), the audit
# record per token on stdout (to a file here). Only the log level is lowered, so the
# access log does not write a line per request.
store_env=(TOKENSVC_DATA_DIR="$work/data")
if [[ $STORE == vault ]]; then
	bench_start_vault
	# Key cache at its defaults (on, 60 s, 100000 entries).
	store_env=(TOKENSVC_STORE=vault VAULT_TOKEN="$svc_token")
fi
port=$(bench_freeport)
url="https://127.0.0.1:$port"
bench_start_tokensvc "$url" TOKENSVC_TLS_CERT="$work/tls.crt" TOKENSVC_TLS_KEY="$work/tls.key" "${store_env[@]}" "${pprof_env[@]}"

# With PPROF_OUT, /metrics is on the metrics address with the profiler.
extra=(${metrics_url:+-metrics-url "$metrics_url"} "${pprof_args[@]}")
baseline=()
if [[ $BASELINE == 1 ]]; then
	baseline=(-baseline -tls-cert "$work/tls.crt" -tls-key "$work/tls.key")
fi
# PERF_OUT=<file>: record tokensvc's CPU profile with perf (call graphs, 499 Hz) for the
# whole tokenbench run; read it with `perf report -i <file> --no-children`.
perf_pid=
if [[ -n ${PERF_OUT:-} ]]; then
	perf record -F 499 -g -o "$PERF_OUT" -p "$svc_pid" 2>"$work/perf.err" &
	perf_pid=$!
	bench_track "$perf_pid" INT
	sleep 1
fi
if [[ $STORE == vault ]]; then
	bench_machine "$("$vault_bin" version | head -1)"
	echo "# Vault dev server pid $vault_pid on $VAULT_ADDR"
	echo "# tokensvc ($(bench_rev)) pid $svc_pid on $url (vault store, key cache defaults, Vault call timeout ${TOKENSVC_VAULT_TIMEOUT:-250ms (default)}, limits at defaults, audit to a file)"
else
	bench_machine
	echo "# tokensvc ($(bench_rev)) pid $svc_pid on $url (embedded store, limits at defaults, audit to a file)"
fi
echo "# tokenbench storm -devices $DEVICES -c $WORKERS -max-duration $MAX_DURATION ${baseline[*]:+-baseline} $*"
TOKENSVC_ADMIN_TOKEN="$admin" bench_run 3600 "$work/tokenbench" storm -url "$url" -cacert "$work/tls.crt" \
	-server-pid "$svc_pid" -devices "$DEVICES" -c "$WORKERS" -max-duration "$MAX_DURATION" "${baseline[@]}" "${extra[@]}" "$@"

if [[ -n $perf_pid ]]; then
	kill -INT "$perf_pid" 2>/dev/null || true
	wait "$perf_pid" || true
	bench_untrack "$perf_pid"
	echo "# perf profile of tokensvc in $PERF_OUT"
fi
echo "# audit records written: $(wc -l <"$work/tokensvc.out")"
bench_tokensvc_stderr
