#!/usr/bin/env bash
# bench-token.sh: GET /token throughput and latency, tokensvc next to a bare net/http
# baseline, in one run (DESIGN §6). Builds tokensvc and tokenbench, starts tokensvc on the
# embedded store in a temp dir on a free loopback port with limits out of the way and the
# audit off, provisions DEVICES HS256 devices, measures, stops the service.
# Loopback only; bounded: the service is killed on exit and the whole run has a deadline.
#
#   scripts/bench-token.sh                 # 200 devices, 32 workers, 15 s per phase
#   DEVICES=500 WORKERS=64 DURATION=30s scripts/bench-token.sh -json
#   REV=HEAD scripts/bench-token.sh        # tokensvc built from a commit (git archive)
#   PPROF_OUT=/tmp/prof scripts/bench-token.sh -baseline-process
#                                          # + tokensvc's CPU and alloc profiles of its phase
#                                          # (/tmp/prof/tokensvc.{cpu,allocs}.pprof) and the
#                                          # bare handler's whole run (baseline.cpu.pprof)
# Extra arguments go to tokenbench load.
set -euo pipefail

. "$(dirname "$0")/bench-lib.sh"
bench_keepalive_knobs
bench_init
bench_build
bench_pprof

port=$(bench_freeport)
url="http://127.0.0.1:$port"
bench_start_tokensvc "$url" TOKENSVC_DATA_DIR="$work/data" "${TOKENSVC_NO_LIMITS[@]}" "${pprof_env[@]}"

bench_machine
echo "# tokensvc pid $svc_pid on $url; tokenbench load -provision $DEVICES -c $WORKERS -d $DURATION -warmup $WARMUP $*"
TOKENSVC_ADMIN_TOKEN="$admin" bench_run 600 "$work/tokenbench" load -url "$url" -server-pid "$svc_pid" \
	-provision "$DEVICES" -c "$WORKERS" -d "$DURATION" -warmup "$WARMUP" "${pprof_args[@]}" "$@"

bench_tokensvc_stderr
