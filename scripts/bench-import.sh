#!/usr/bin/env bash
# bench-import.sh: devices per second of one streaming POST /devices/import, with the
# import run one line at a time (TOKENSVC_IMPORT_WORKERS=1, the baseline) and in
# parallel (each value of IMPORT_WORKERS), back to back in one run, each against a fresh
# tokensvc process: on the embedded store (a fresh data directory per run) or, with
# STORE=vault, on a fresh Vault dev server per run (scripts/vault.sh; KV hub, key cache
# at its defaults) — a dev server's CPU per write grows with what it holds, so no run
# writes into a store an earlier run filled. Every report line is checked; the ratio is
# parallel / workers=1 (SINGLE=0 skips the workers=1 run). With STORE=vault the same run
# also writes DEVICES device-sized KV v2 records straight to a fresh Vault from
# RAW_WORKERS (default 16) workers: the ceiling of one write per device.
# Loopback only; bounded; everything started is stopped on exit.
#
#   scripts/bench-import.sh                              # embedded, 5000 devices, workers 1 and 16
#   ORDER=random DEVICES=1000000 SINGLE=0 IMPORT_WORKERS=64 scripts/bench-import.sh
#                                                       # the IDs in a fixed shuffled order (default
#                                                       # sequential): each lands among those stored
#   PRELOAD=1000000 DEVICES=100000 ORDER=random SINGLE=0 IMPORT_WORKERS="256 1024" scripts/bench-import.sh
#                                                       # first imports PRELOAD devices, unmeasured, then
#                                                       # measures DEVICES new ones landing among them
#   STORE=vault DEVICES=5000 scripts/bench-import.sh
#   STORE=vault IMPORT_WORKERS="8 16 32" scripts/bench-import.sh
#   STORE=vault TRANSIT=1 DEVICES=1000 scripts/bench-import.sh   # a Transit hub (keys imported into Transit)
#   STORE=vault BASE=main scripts/bench-import.sh        # also tokensvc built from BASE (git archive), first, same run
#   PPROF_OUT=/tmp/prof STORE=vault scripts/bench-import.sh  # tokensvc's CPU and alloc profiles of each run's first
#                                                       # PPROF_SECONDS (10) s: import-<workers>.{cpu,allocs}.pprof
set -euo pipefail

. "$(dirname "$0")/bench-lib.sh"
STORE=${STORE:-embedded}
DEVICES=${DEVICES:-5000}
IMPORT_WORKERS=${IMPORT_WORKERS:-16}
TRANSIT=${TRANSIT:-0}
ORDER=${ORDER:-sequential}
PRELOAD=${PRELOAD:-0}
BASE=${BASE:-}
bench_init
bench_build
if [[ -n $BASE ]]; then
	mkdir "$work/base-src"
	git archive "$BASE" | tar -x -C "$work/base-src"
	(cd "$work/base-src" && CGO_ENABLED=0 $GO build -trimpath -o "$work/tokensvc-base" ./cmd/tokensvc)
	rm -rf "$work/base-src"
fi

env_store=()
vault_pid=0
# fresh_vault: with STORE=vault, stops the previous run's Vault dev server and starts a
# new one, setting env_store for tokensvc.
fresh_vault() {
	[[ $STORE == vault ]] || return 0
	if ((vault_pid > 0)); then
		bench_stop "$vault_pid"
		bench_untrack "$vault_pid"
	fi
	bench_start_vault
	# The request-path deadline raised from 250 ms (VAULT_TIMEOUT): on a loaded machine an
	# import's device read (BASE revisions read every device first) now and then takes
	# longer, which stops the import as a store outage — that is not what is measured here.
	env_store=(TOKENSVC_STORE=vault VAULT_TOKEN="$svc_token" TOKENSVC_VAULT_TIMEOUT="${VAULT_TIMEOUT:-2s}")
}
if [[ $STORE == vault ]]; then
	bench_machine "$("$(bash scripts/vault.sh)" version | head -1), a fresh dev server per run"
else
	bench_machine
fi
echo "# tokensvc $(bench_rev), store $STORE, $DEVICES HS256 devices per run$( ((PRELOAD > 0)) && echo " into a store already holding $PRELOAD"), IDs in $ORDER order$([[ $TRANSIT == 1 ]] && echo ", Transit hub")$([[ $STORE == vault ]] && echo ", TOKENSVC_VAULT_TIMEOUT=${VAULT_TIMEOUT:-2s}")"

transit=()
if [[ $TRANSIT == 1 ]]; then transit=(-transit); fi
declare -A rate
runs=$IMPORT_WORKERS
if [[ ${SINGLE:-1} != 0 ]]; then runs="1 $runs"; fi
if [[ -n $BASE ]]; then runs="base $runs"; fi
run=0
for w in $runs; do
	run=$((run + 1))
	data="$work/data-$run"
	mkdir -p "$data"
	port=$(bench_freeport)
	url="http://127.0.0.1:$port"
	if [[ $w == base ]]; then
		cp "$work/tokensvc" "$work/tokensvc-new"
		cp "$work/tokensvc-base" "$work/tokensvc"
	fi
	# BASE runs with BASE_WORKERS import workers if set, else with its own default.
	workers=$w
	env_workers=(TOKENSVC_IMPORT_WORKERS="$w")
	if [[ $w == base ]]; then
		workers=${BASE_WORKERS:-default}
		env_workers=()
		if [[ -n ${BASE_WORKERS:-} ]]; then env_workers=(TOKENSVC_IMPORT_WORKERS="$BASE_WORKERS"); fi
	fi
	fresh_vault
	bench_pprof
	if [[ -n ${PPROF_OUT:-} ]]; then pprof_args+=(-pprof-seconds "${PPROF_SECONDS:-10}s"); fi
	bench_start_tokensvc "$url" TOKENSVC_DATA_DIR="$data" "${env_workers[@]}" "${TOKENSVC_NO_LIMITS[@]}" "${env_store[@]}" "${pprof_env[@]}"
	# PRELOAD: the store first gets PRELOAD devices (unmeasured); the measured IDs carry a
	# suffix and a stride so that each sorts right after a preloaded one, across the range.
	ids=()
	if ((PRELOAD > 0)); then
		prefix="imp-$run-"
		TOKENSVC_ADMIN_TOKEN="$admin" bench_run 1800 "$work/tokenbench" import -url "$url" -n "$PRELOAD" -order "$ORDER" \
			-device-prefix "$prefix" -label "preload, workers=$workers" >/dev/null
		ids=(-device-prefix "$prefix" -device-suffix b -id-stride "$((PRELOAD > DEVICES ? PRELOAD / DEVICES : 1))")
	fi
	out=$(TOKENSVC_ADMIN_TOKEN="$admin" bench_run 900 "$work/tokenbench" import -url "$url" -n "$DEVICES" -order "$ORDER" "${ids[@]}" "${pprof_args[@]}" \
		-label "$([[ $w == base ]] && echo "$BASE ($(git rev-parse --short "$BASE")), workers=$workers" || echo "workers=$w")" -server-pid "$svc_pid" -vault-pid "$vault_pid" "${transit[@]}")
	echo "$out"
	rate[$w]=$(sed -n 's/.* s: \([0-9]*\)\/s;.*/\1/p' <<<"$out")
	if [[ -n ${PPROF_OUT:-} ]]; then
		for kind in cpu allocs; do mv "$PPROF_OUT/import.$kind.pprof" "$PPROF_OUT/import-$w.$kind.pprof"; done
	fi
	bench_tokensvc_stderr
	bench_stop "$svc_pid"
	bench_untrack "$svc_pid"
	if [[ $w == base ]]; then cp "$work/tokensvc-new" "$work/tokensvc"; fi
done
if [[ $STORE == vault ]]; then
	fresh_vault
	# With tokensvc's own token (its policy is evaluated on every call) under its prefix.
	out=$(VAULT_TOKEN="$svc_token" bench_run 900 "$work/tokenbench" import -raw-kv "${RAW_WORKERS:-16}" \
		-vault-addr "$VAULT_ADDR" -raw-path secret/data/tokensvc/raw -n "$DEVICES" -vault-pid "$vault_pid")
	echo "$out"
	rate[raw]=$(sed -n 's/.* s: \([0-9]*\)\/s;.*/\1/p' <<<"$out")
fi
for w in $IMPORT_WORKERS; do
	if [[ $STORE == vault ]]; then
		awk -v p="${rate[$w]}" -v b="${rate[raw]}" -v w="$w" 'BEGIN { printf "ratio workers=%s / raw KV v2 writes: %.2f (devices per second over single record writes per second)\n", w, p / b }'
	fi
	if [[ -n ${rate[1]:-} ]]; then
		awk -v p="${rate[$w]}" -v b="${rate[1]}" -v w="$w" 'BEGIN { printf "ratio workers=%s / workers=1: %.2f\n", w, p / b }'
	fi
	if [[ -n $BASE ]]; then
		awk -v p="${rate[$w]}" -v b="${rate[base]}" -v w="$w" -v r="$BASE" 'BEGIN { printf "ratio workers=%s / %s: %.2f\n", w, r, p / b }'
	fi
done
