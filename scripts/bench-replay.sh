#!/usr/bin/env bash
# bench-replay.sh: what the shared replay store costs (issue 15), side by side in one
# run. Builds tokensvc and tokenbench, starts a redis-server (scripts/redis.sh) on a free
# loopback port with a password and an append-only file fsynced on every write
# (REDIS_FSYNC, default always: nothing acknowledged is lost when it is killed), and two
# tokensvc processes on the embedded store: "memory" (per-process replay memory, the
# default) and "shared" (TOKENSVC_REPLAY_STORE on that server). Then, for each:
#   1. keep-alive GET /token (tokenbench load: DEVICES HS256 devices, WORKERS workers,
#      DURATION per phase, limits out of the way, audit off), the bare net/http
#      baseline in its own process measured once, before both;
#   2. a boot storm (tokenbench storm over TLS: STORM_DEVICES ES256 devices, each one
#      GET /token on a new TLS connection with a fresh assertion, STORM_WORKERS at once,
#      limits at their defaults) — STORM=0 skips it. SHARED_LIMITS=1 also keeps the
#      "shared" process's per-device buckets in the replay store for the storm
#      (TOKENSVC_REPLAY_STORE_DEVICE_LIMITS; the "memory" process applies the flag-free
#      defaults either way).
# For "shared" it reports the replay store's commands per issued token: INFO
# commandstats around each phase against tokensvc_tokens_issued_total from /metrics.
# Loopback only; bounded: every process is stopped on exit.
#
#   scripts/bench-replay.sh                              # 200 devices, 32 workers, 15 s; storm of 5000
#   DURATION=5s STORM_DEVICES=2000 scripts/bench-replay.sh
set -euo pipefail

STORM=${STORM:-1}
STORM_DEVICES=${STORM_DEVICES:-5000}
STORM_WORKERS=${STORM_WORKERS:-128}
REDIS_FSYNC=${REDIS_FSYNC:-always}
SHARED_LIMITS=${SHARED_LIMITS:-0}

. "$(dirname "$0")/bench-lib.sh"
bench_keepalive_knobs
bench_init
bench_build
"$work/tokenbench" selfsigned -cert "$work/tls.crt" -key "$work/tls.key"

redis_bin=$(bash scripts/redis.sh)
redis_port=$(bench_freeport)
redis_pw=$(bench_secret 16)
mkdir -p "$work/redis"
cat >"$work/redis/redis.conf" <<CONF
bind 127.0.0.1
port $redis_port
dir $work/redis
requirepass $redis_pw
appendonly yes
appendfsync $REDIS_FSYNC
save ""
protected-mode no
loglevel warning
CONF
"$redis_bin" "$work/redis/redis.conf" >"$work/redis.log" 2>&1 &
redis_pid=$!
bench_track "$redis_pid"
rcli() { REDISCLI_AUTH="$redis_pw" timeout 10 redis-cli -p "$redis_port" "$@"; }
for _ in $(seq 100); do rcli ping >/dev/null 2>&1 && break; sleep 0.1; done
rcli ping >/dev/null

# calls COMMAND: how often the replay store has run COMMAND since its last CONFIG RESETSTAT.
calls() { rcli info commandstats | tr -d '\r' | sed -n "s/^cmdstat_$1:calls=\([0-9]*\),.*/\1/p" | grep . || echo 0; }
# counts URL: "ISSUED REQUESTS": tokens the tokensvc at URL has issued, and GET /token
# requests it has answered (any status), from its /metrics.
counts() {
	curl -fsS --cacert "$work/tls.crt" "$1/metrics" | awk '
		/^tokensvc_tokens_issued_total\{/ && /outcome="issued"/ {t += $2}
		/^tokensvc_http_request_duration_seconds_count\{/ && /method="GET"/ && /route="\/token"/ {r += $2}
		END {printf "%d %d\n", t, r}'
}

# start NAME SCHEME ENV...: a tokensvc (http or https) with its own data dir; sets
# url_NAME, pid_NAME, admin_NAME.
start() {
	local name=$1 scheme=$2 port tls=()
	shift 2
	port=$(bench_freeport)
	rm -rf "${work:?}/$name"
	mkdir -p "$work/$name"
	[[ $scheme == https ]] && tls=(TOKENSVC_TLS_CERT="$work/tls.crt" TOKENSVC_TLS_KEY="$work/tls.key")
	bench_start_tokensvc "$scheme://127.0.0.1:$port" TOKENSVC_DATA_DIR="$work/$name" "${tls[@]}" "$@"
	mv "$work/tokensvc.err" "$work/$name.err"
	printf -v "url_$name" '%s' "$scheme://127.0.0.1:$port"
	printf -v "pid_$name" '%s' "$svc_pid"
	printf -v "admin_$name" '%s' "$admin"
}
# start_both SCHEME ENV...: "memory" and "shared" with the same settings; "shared" also
# gets the replay store and ${shared_extra[@]}.
shared_extra=()
start_both() {
	local scheme=$1
	shift
	start memory "$scheme" "$@"
	start shared "$scheme" "$@" TOKENSVC_REPLAY_STORE="redis://127.0.0.1:$redis_port" \
		TOKENSVC_REPLAY_STORE_PASSWORD="$redis_pw" "${shared_extra[@]}"
}
stop_both() {
	bench_stop "$pid_memory"
	bench_untrack "$pid_memory"
	bench_stop "$pid_shared"
	bench_untrack "$pid_shared"
}
start_both http "${TOKENSVC_NO_LIMITS[@]}"

bench_machine "$("$redis_bin" --version | cut -d' ' -f1-3), appendfsync $REDIS_FSYNC"
echo "# tokensvc ($(bench_rev)): memory pid $pid_memory on $url_memory; shared pid $pid_shared on $url_shared (replay store redis-server pid $redis_pid)"

# phase NAME TITLE COMMAND...: runs a tokenbench phase against tokensvc NAME and, for
# the shared one, prints the replay store's SETs per issued token during it.
phase() {
	local name=$1 title=$2 url pid adm before after sets
	shift 2
	url=url_$name pid=pid_$name adm=admin_$name
	rcli config resetstat >/dev/null
	read -ra before < <(counts "${!url}")
	echo
	echo "## $title: $name"
	TOKENSVC_ADMIN_TOKEN="${!adm}" bench_run 3600 "$work/tokenbench" "$@" -url "${!url}" -server-pid "${!pid}"
	if [[ $name == shared ]]; then
		sets=$(calls set)
		evals=$(($(calls evalsha) + $(calls eval)))
		read -ra after < <(counts "${!url}")
		awk -v s="$sets" -v e="$evals" -v t="$((after[0] - before[0]))" -v r="$((after[1] - before[1]))" 'BEGIN {
			printf "# replay store: %d SET for %d GET /token requests (%.4f per request; %d tokens issued, %.4f per token)", s, r, (r ? s / r : 0), t, (t ? s / t : 0)
			if (e) printf "; %d EVALSHA/EVAL for the device limits (%.4f per request)", e, e / r
			printf "\n"
		}'
	fi
}

# Keep-alive phases over HTTP without limits (like bench-token.sh); the bare handler is
# measured once, in its own process, before both.
for name in memory shared; do
	base=(-baseline=false)
	[[ $name == memory ]] && base=(-baseline -baseline-process)
	phase "$name" "keep-alive GET /token ($DEVICES devices, $WORKERS workers, $DURATION)" \
		load -provision "$DEVICES" -c "$WORKERS" -d "$DURATION" -warmup "$WARMUP" "${base[@]}"
done
# The storm over TLS with the limits at their defaults (like bench-storm.sh), on fresh
# processes; the audit goes to a file.
if [[ $STORM == 1 ]]; then
	stop_both
	[[ $SHARED_LIMITS == 1 ]] && shared_extra=(TOKENSVC_REPLAY_STORE_DEVICE_LIMITS=true)
	start_both https
	for name in memory shared; do
		phase "$name" "boot storm ($STORM_DEVICES ES256 devices, $STORM_WORKERS at once, a new TLS connection each)" \
			storm -cacert "$work/tls.crt" -devices "$STORM_DEVICES" -c "$STORM_WORKERS"
	done
fi
for name in memory shared; do
	if [[ -s $work/$name.err ]]; then
		echo "# tokensvc $name stderr (first 10 lines):" >&2
		head -10 "$work/$name.err" >&2
	fi
done
