#!/usr/bin/env bash
# bench-vault.sh: tokensvc on a real Vault against Vault itself. Gets the Vault binary
# from scripts/vault.sh (built once, cached), starts a dev server on a free loopback port
# (KV v2 at secret/, Transit mounted), writes deploy/vault/tokensvc.hcl as policy and
# gives tokensvc a token holding exactly that policy, creates a Transit hmac key for the
# raw phase (and a token that may only HMAC with it), starts tokensvc with
# TOKENSVC_STORE=vault and the key cache on (defaults), and runs `tokenbench vault`:
#   (a) GET /token keep-alive HS256, devices on a KV hub (keys cached by tokensvc)
#   (b) POST /v1/transit/hmac/<key>/sha2-256 on Vault directly, same workers
#   (c) GET /token keep-alive HS256, devices on a Transit hub (Vault HMACs every token)
# and prints (a)/(b) and (c)/(b). Limits are out of the way as in bench-token.sh.
# Loopback only; bounded; Vault and tokensvc are stopped on exit.
#
#   scripts/bench-vault.sh                         # 200 devices per hub, 32 workers, 15 s per phase
#   DEVICES=100 WORKERS=16 DURATION=10s scripts/bench-vault.sh -json
# Extra arguments go to tokenbench vault.
set -euo pipefail

DEVICES=${DEVICES:-200}
WORKERS=${WORKERS:-32}
DURATION=${DURATION:-15s}
WARMUP=${WARMUP:-2s}
GO=${GO:-go}

root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
svc_pid=
vault_pid=
stop() { # pid: SIGTERM, then SIGKILL after 10 s
	local pid=$1
	[[ -n $pid ]] && kill -0 "$pid" 2>/dev/null || return 0
	kill -TERM "$pid" 2>/dev/null || true
	for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
	kill -KILL "$pid" 2>/dev/null || true
}
cleanup() {
	stop "$svc_pid"
	stop "$vault_pid"
	rm -rf "$work"
}
trap cleanup EXIT

cd "$root"
vault_bin=$(bash scripts/vault.sh)
if [[ -n ${REV:-} ]]; then # REV=<commit>: build tokensvc from that commit, not the working tree
	mkdir "$work/src"
	git archive "$REV" | tar -x -C "$work/src"
	(cd "$work/src" && CGO_ENABLED=0 $GO build -trimpath -o "$work/tokensvc" ./cmd/tokensvc)
	rm -rf "$work/src"
else
	CGO_ENABLED=0 $GO build -trimpath -o "$work/tokensvc" ./cmd/tokensvc
fi
CGO_ENABLED=0 $GO build -trimpath -o "$work/tokenbench" ./cmd/tokenbench

vport=$("$work/tokenbench" freeport)
vroot="root-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
export VAULT_ADDR="http://127.0.0.1:$vport"
mkdir "$work/home"
HOME="$work/home" "$vault_bin" server -dev -dev-listen-address="127.0.0.1:$vport" \
	-dev-root-token-id="$vroot" -dev-no-store-token -log-level=warn >"$work/vault.log" 2>&1 &
vault_pid=$!
for _ in $(seq 300); do
	if curl -fsS -o /dev/null "$VAULT_ADDR/v1/sys/health" 2>/dev/null; then break; fi
	kill -0 "$vault_pid" 2>/dev/null || { cat "$work/vault.log" >&2; exit 1; }
	sleep 0.1
done
curl -fsS -o /dev/null "$VAULT_ADDR/v1/sys/health"

v() { VAULT_TOKEN="$vroot" HOME="$work/home" "$vault_bin" "$@"; }
v secrets enable transit >/dev/null
v policy write tokensvc deploy/vault/tokensvc.hcl >/dev/null
svc_token=$(v token create -policy=tokensvc -no-default-policy -ttl=1h -field=token)
v write -f transit/keys/bench-raw type=hmac key_size=32 >/dev/null
printf 'path "transit/hmac/bench-raw/*" {\n  capabilities = ["update"]\n}\n' >"$work/raw.hcl"
v policy write bench-raw "$work/raw.hcl" >/dev/null
raw_token=$(v token create -policy=bench-raw -no-default-policy -ttl=1h -field=token)

port=$("$work/tokenbench" freeport)
admin=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
url="http://127.0.0.1:$port"
# Vault store with the key cache at its defaults (on, 60 s, 100000 entries); limits and
# the audit record out of the way, as in bench-token.sh.
TOKENSVC_ADDR="127.0.0.1:$port" \
TOKENSVC_STORE=vault \
VAULT_TOKEN="$svc_token" \
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

echo "# $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(go version | cut -d' ' -f3), $("$vault_bin" version | head -1)"
echo "# Vault dev server pid $vault_pid on $VAULT_ADDR; tokensvc pid $svc_pid on $url (store vault, cache defaults)"
echo "# tokenbench vault -provision $DEVICES -c $WORKERS -d $DURATION -warmup $WARMUP $*"
TOKENSVC_ADMIN_TOKEN="$admin" VAULT_TOKEN="$raw_token" timeout 900 "$work/tokenbench" vault -url "$url" \
	-vault-addr "$VAULT_ADDR" -transit-key bench-raw -server-pid "$svc_pid" -vault-pid "$vault_pid" \
	-provision "$DEVICES" -c "$WORKERS" -d "$DURATION" -warmup "$WARMUP" "$@"

if [[ -s $work/tokensvc.err ]]; then
	echo "# tokensvc stderr (warnings and errors, first 20 lines):" >&2
	head -20 "$work/tokensvc.err" >&2
fi
