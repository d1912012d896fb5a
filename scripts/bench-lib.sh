# bench-lib.sh: what scripts/bench-*.sh share. Sourced, not run:
#
#   . "$(dirname "$0")/bench-lib.sh"
#   bench_init            # cd to the repository, temp dir $work, cleanup on any exit
#
# Every process a script starts is registered (bench_track) and stopped on exit, on
# failure and on Ctrl-C or SIGTERM: SIGTERM (or the signal it was registered with), then
# SIGKILL after 10 s; the temp dir goes with it. Long commands run under bench_run, which
# bounds them with timeout(1) and keeps the shell able to react to Ctrl-C meanwhile.
# Knobs read here: GO (default go), REV (build tokensvc from that commit).

GO=${GO:-go}

# bench_keepalive_knobs: the knobs of the keep-alive GET /token benches (bench-token.sh,
# bench-vault.sh) with their defaults: DEVICES 200 (per hub), WORKERS 32, DURATION 15s
# per phase after a WARMUP of 2s.
bench_keepalive_knobs() {
	DEVICES=${DEVICES:-200}
	WORKERS=${WORKERS:-32}
	DURATION=${DURATION:-15s}
	WARMUP=${WARMUP:-2s}
}

# bench_pins: with VAULT_CPUS and/or SVC_CPUS (taskset lists, e.g. 0 and 1), sets
# $vault_pin and $svc_pin to the command prefixes that start Vault, and tokensvc with
# the load tool, on those CPUs only (as though Vault ran on a machine of its own); each
# is empty without its variable. Go sizes GOMAXPROCS from the affinity it starts with.
bench_pins() {
	vault_pin=() svc_pin=()
	[[ -z ${VAULT_CPUS:-} ]] || vault_pin=(taskset -c "$VAULT_CPUS")
	[[ -z ${SVC_CPUS:-} ]] || svc_pin=(taskset -c "$SVC_CPUS")
}

# bench_init: sets $root (the repository, also the working directory) and $work (a
# fresh temp dir) and installs the cleanup traps.
bench_init() {
	root=$(cd "$(dirname "${BASH_SOURCE[1]}")/.." && pwd)
	work=$(mktemp -d)
	_bench_procs=()
	bench_pins
	trap _bench_cleanup EXIT
	trap 'exit 130' INT
	trap 'exit 143' TERM HUP
	cd "$root"
}

# bench_track PID [SIGNAL]: stop PID on exit, with SIGNAL first (default TERM). A
# SIGNAL of -TERM signals PID's process group (PID must lead it).
bench_track() { _bench_procs+=("$1:${2:-TERM}"); }

# bench_untrack PID: PID has ended (and been waited for); do not signal it again.
bench_untrack() {
	local i
	for i in "${!_bench_procs[@]}"; do
		[[ ${_bench_procs[i]%%:*} == "$1" ]] && unset '_bench_procs[i]'
	done
	return 0
}

# bench_stop PID [SIGNAL]: SIGNAL (default TERM; -SIG for PID's process group), then
# SIGKILL after 10 s if PID is still there.
bench_stop() {
	local pid=$1 sig=${2:-TERM} target=$1
	[[ -n $pid ]] && kill -0 "$pid" 2>/dev/null || return 0
	if [[ $sig == -* ]]; then
		sig=${sig#-}
		target=-$pid
		kill -0 -- "$target" 2>/dev/null || target=$pid # not (yet) a group leader
	fi
	kill -"$sig" -- "$target" 2>/dev/null || true
	for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
	kill -KILL -- "$target" 2>/dev/null || true
}

_bench_cleanup() {
	local rc=$? i f
	trap - INT TERM HUP
	for ((i = ${#_bench_procs[@]} - 1; i >= 0; i--)); do # the last started first
		[[ -n ${_bench_procs[i]:-} ]] || continue
		bench_stop "${_bench_procs[i]%%:*}" "${_bench_procs[i]#*:}"
	done
	if ((rc != 0)); then
		for f in "$work/tokensvc.err" "$work/vault.log"; do
			[[ -s $f ]] || continue
			echo "# $(basename "$f") (last 20 lines):" >&2
			tail -20 "$f" >&2
		done
	fi
	rm -rf "$work"
	exit "$rc"
}

# bench_run SECONDS COMMAND...: runs COMMAND under timeout(1) (SIGTERM after SECONDS,
# SIGKILL 30 s later), stopped with its children if the script exits first; returns
# its status.
bench_run() {
	local limit=$1 pid rc=0
	shift
	timeout -k 30 "$limit" "$@" &
	pid=$! # timeout leads its own process group, which holds COMMAND and its children
	bench_track "$pid" -TERM
	wait "$pid" || rc=$?
	bench_untrack "$pid"
	return "$rc"
}

# bench_build: $work/tokensvc (from the working tree, or from commit REV through git
# archive, e.g. to measure the committed service while it is being edited) and
# $work/tokenbench, the load tool of tools/tokenbench (always the working tree).
bench_build() {
	if [[ -n ${REV:-} ]]; then
		mkdir "$work/src"
		git archive "$REV" | tar -x -C "$work/src"
		(cd "$work/src" && CGO_ENABLED=0 $GO build -trimpath -o "$work/tokensvc" ./cmd/tokensvc)
		rm -rf "$work/src"
	else
		CGO_ENABLED=0 $GO build -trimpath -o "$work/tokensvc" ./cmd/tokensvc
	fi
	CGO_ENABLED=0 $GO build -trimpath -o "$work/tokenbench" ./tools/tokenbench
}

# bench_rev: which tokensvc bench_build built, for the header.
bench_rev() {
	if [[ -n ${REV:-} ]]; then
		git rev-parse --short "$REV"
	else
		echo "working tree of $(git rev-parse --short HEAD)"
	fi
}

# bench_freeport: a free loopback TCP port. bench_secret [BYTES]: random hex (24 bytes).
bench_freeport() { "$work/tokenbench" freeport; }
bench_secret() { head -c "${1:-24}" /dev/urandom | od -An -tx1 | tr -d ' \n'; }

# bench_machine [EXTRA]: the header line: CPUs, CPU model, Go version (and EXTRA).
bench_machine() {
	echo "# $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $($GO version | cut -d' ' -f3)${1:+, $1}"
}

# bench_wait_up PID LOG TRIES URL [CURL-OPTION...]: polls URL every 0.1 s, TRIES times
# at most, until it answers 2xx; fails with LOG on stderr if PID dies first, and with
# curl's error if URL still does not answer at the end.
bench_wait_up() {
	local pid=$1 log=$2 tries=$3 url=$4
	shift 4
	for _ in $(seq "$tries"); do
		if curl -fsS "$@" -o /dev/null "$url" 2>/dev/null; then return 0; fi
		kill -0 "$pid" 2>/dev/null || { cat "$log" >&2; return 1; }
		sleep 0.1
	done
	curl -fsS "$@" -o /dev/null "$url"
}

# TOKENSVC_NO_LIMITS: tokensvc's environment with the limits out of the way: no
# per-device or global rate limit, no in-flight bound, and the audit record per token
# off (it is a write per request to stdout).
TOKENSVC_NO_LIMITS=(TOKENSVC_DEVICE_RATE=0 TOKENSVC_GLOBAL_RATE=0 TOKENSVC_MAX_INFLIGHT=0 TOKENSVC_AUDIT=off)

# bench_start_tokensvc URL NAME=VALUE...: starts $work/tokensvc listening for URL (an
# http or https loopback URL; https trusts $work/tls.crt) with a fresh admin token in
# $admin, only warnings logged, and the given environment on top of the script's;
# stdout (the audit) to $work/tokensvc.out, stderr to $work/tokensvc.err. Sets $svc_pid
# and returns once /healthz answers. SVC_GOGC, SVC_GOMAXPROCS and SVC_GOMEMLIMIT, when
# set, are GOGC, GOMAXPROCS and GOMEMLIMIT for tokensvc alone (the load tool, Vault and
# the bare handler keep Go's defaults).
bench_start_tokensvc() {
	local url=$1 hostport curlopts=()
	shift
	hostport=${url#*://}
	[[ $url == https://* ]] && curlopts=(--cacert "$work/tls.crt")
	admin=$(bench_secret)
	"${svc_pin[@]}" env TOKENSVC_ADDR="$hostport" TOKENSVC_ADMIN_TOKEN="$admin" TOKENSVC_LOG_LEVEL=warn ${SVC_GOGC:+GOGC=$SVC_GOGC} ${SVC_GOMAXPROCS:+GOMAXPROCS=$SVC_GOMAXPROCS} ${SVC_GOMEMLIMIT:+GOMEMLIMIT=$SVC_GOMEMLIMIT} "$@" \
		"$work/tokensvc" >"$work/tokensvc.out" 2>"$work/tokensvc.err" &
	svc_pid=$!
	bench_track "$svc_pid"
	bench_wait_up "$svc_pid" "$work/tokensvc.err" 100 "$url/healthz" "${curlopts[@]}"
}

# bench_start_vault: a Vault dev server (binary from scripts/vault.sh) on a free
# loopback port, KV v2 at secret/, Transit mounted at transit/, PKI at pki/ with role
# tokensvc-device, deploy/vault/tokensvc.hcl
# written as policy "tokensvc". Sets $vault_bin, $vault_pid, $vault_root (root token),
# $svc_token (a 1 h token with exactly the tokensvc policy) and exports VAULT_ADDR.
bench_start_vault() {
	local vport
	vault_bin=$(bash scripts/vault.sh)
	vport=$(bench_freeport)
	vault_root="root-$(bench_secret 16)"
	export VAULT_ADDR="http://127.0.0.1:$vport"
	mkdir -p "$work/home"
	HOME="$work/home" "${vault_pin[@]}" "$vault_bin" server -dev -dev-listen-address="127.0.0.1:$vport" \
		-dev-root-token-id="$vault_root" -dev-no-store-token -log-level=warn >"$work/vault.log" 2>&1 &
	vault_pid=$!
	bench_track "$vault_pid"
	bench_wait_up "$vault_pid" "$work/vault.log" 300 "$VAULT_ADDR/v1/sys/health"
	bench_vault secrets enable transit >/dev/null
	# Device certificates (hubs in mode certificate): the PKI engine as the README's
	# operator steps set it up (and vaulttest.MountPKI for the tests).
	bench_vault secrets enable -max-lease-ttl=87600h pki >/dev/null
	bench_vault write -field=serial_number pki/root/generate/internal common_name="tokensvc device CA" \
		key_type=ec key_bits=256 ttl=87600h issuer_name=devices >/dev/null
	bench_vault write pki/issuer/devices leaf_not_after_behavior=truncate >/dev/null
	bench_vault write pki/roles/tokensvc-device allow_any_name=true enforce_hostnames=false \
		cn_validations=disabled allow_ip_sans=false use_csr_common_name=false use_csr_sans=false \
		require_cn=true server_flag=false client_flag=true code_signing_flag=false \
		email_protection_flag=false key_usage=DigitalSignature key_type=any \
		basic_constraints_valid_for_non_ca=true not_before_duration=300s max_ttl=720h \
		no_store=true generate_lease=false >/dev/null
	bench_vault policy write tokensvc deploy/vault/tokensvc.hcl >/dev/null
	svc_token=$(bench_vault token create -policy=tokensvc -no-default-policy -ttl=1h -field=token)
}

# bench_vault ARG...: the vault CLI against the dev server, as root.
bench_vault() { VAULT_TOKEN="$vault_root" HOME="$work/home" timeout 60 "$vault_bin" "$@"; }

# bench_tokensvc_stderr: tokensvc's peak resident memory (VmHWM) while it is still up,
# then its warnings and errors, if any, on stderr.
bench_tokensvc_stderr() {
	if [[ -n ${svc_pid:-} && -r /proc/$svc_pid/status ]]; then
		awk '/^VmHWM:/ { printf "# tokensvc peak RSS: %.1f MiB\n", $2 / 1024 }' "/proc/$svc_pid/status" >&2
	fi
	if [[ -s $work/tokensvc.err ]]; then
		echo "# tokensvc stderr (warnings and errors, first 20 lines):" >&2
		head -20 "$work/tokensvc.err" >&2
	fi
}

# bench_pprof: with PPROF_OUT=<dir>, tokensvc's own profiler is switched on (it is off
# by default and only ever served on the metrics address): sets $pprof_env (tokensvc's
# extra environment: TOKENSVC_METRICS_ADDR on a free loopback port, TOKENSVC_PPROF=true),
# $pprof_args (tokenbench's -pprof-url and -pprof-out: CPU and alloc profiles of the
# tokensvc phase into <dir>/<phase>.{cpu,allocs}.pprof) and $metrics_url (/metrics moves
# to that address). Without PPROF_OUT all three are empty.
bench_pprof() {
	pprof_env=() pprof_args=() metrics_url=
	[[ -n ${PPROF_OUT:-} ]] || return 0
	local mport
	mport=$(bench_freeport)
	mkdir -p "$PPROF_OUT"
	pprof_env=(TOKENSVC_METRICS_ADDR="127.0.0.1:$mport" TOKENSVC_PPROF=true)
	pprof_args=(-pprof-url "http://127.0.0.1:$mport/debug/pprof" -pprof-out "$(cd "$PPROF_OUT" && pwd)")
	metrics_url="http://127.0.0.1:$mport/metrics"
}
