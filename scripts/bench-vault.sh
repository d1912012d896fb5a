#!/usr/bin/env bash
# bench-vault.sh: tokensvc on a real Vault against Vault itself. Gets the Vault binary
# from scripts/vault.sh (built once, cached), starts a dev server on a free loopback port
# (KV v2 at secret/, Transit mounted), writes deploy/vault/tokensvc.hcl as policy and
# gives tokensvc a token holding exactly that policy, creates a Transit hmac key for the
# raw phase (and a token that may only HMAC with it), starts tokensvc with
# TOKENSVC_STORE=vault and the key cache on (defaults), and runs `tokenbench vault`:
#   (a) GET /token keep-alive HS256, devices on a KV hub (keys cached by tokensvc)
#   (b) POST /v1/transit/hmac/<key>/sha2-256 on Vault directly, same workers
#   (c) GET /token keep-alive HS256, devices on a Transit hub (Vault HMACs every token;
#       by default a hub in mode policy, whose one Transit key lets concurrent tokens
#       share batched transit/hmac calls; -transit-mode deviceKey for a key per device)
# and prints (a)/(b) and (c)/(b), with Vault's CPU per request and (c)/(b) of Vault CPU
# and p99. Limits are out of the way as in bench-token.sh. tokensvc inherits the
# environment, so TOKENSVC_VAULT_TRANSIT_BATCH_MAX=0 measures it without batching.
# Loopback only; bounded; Vault and tokensvc are stopped on exit.
#
#   scripts/bench-vault.sh                         # 200 devices per hub, 32 workers, 15 s per phase
#   DEVICES=100 WORKERS=16 DURATION=10s scripts/bench-vault.sh -json
#   REV=HEAD scripts/bench-vault.sh                # tokensvc built from a commit (git archive)
#   scripts/bench-vault.sh -transit-mode deviceKey # Transit hub with a key per device
#   VAULT_CPUS=0 SVC_CPUS=1 scripts/bench-vault.sh # Vault on CPU 0 alone, tokensvc and the tool on 1
#   PPROF_OUT=/tmp/prof scripts/bench-vault.sh     # + tokensvc's profiles (kv.*, transit.*.pprof)
#                                                  # and Vault's (vault.{kv,raw,transit}.cpu.pprof)
# Extra arguments go to tokenbench vault.
set -euo pipefail

. "$(dirname "$0")/bench-lib.sh"
bench_keepalive_knobs
bench_init
bench_build
bench_start_vault
bench_pprof

# Transit makes its RSA-4096 wrapping key on the first read, which can take longer than
# tokensvc's 5 s write deadline on a loaded machine: have it made before provisioning.
bench_vault read transit/wrapping_key >/dev/null

# The raw phase's Transit hmac key, and a token that may only HMAC with it.
bench_vault write -f transit/keys/bench-raw type=hmac key_size=32 >/dev/null
printf 'path "transit/hmac/bench-raw/*" {\n  capabilities = ["update"]\n}\n' >"$work/raw.hcl"
bench_vault policy write bench-raw "$work/raw.hcl" >/dev/null
raw_token=$(bench_vault token create -policy=bench-raw -no-default-policy -ttl=1h -field=token)

port=$(bench_freeport)
url="http://127.0.0.1:$port"
# Vault store with the key cache at its defaults (on, 60 s, 100000 entries); limits and
# the audit record out of the way, as in bench-token.sh.
bench_start_tokensvc "$url" TOKENSVC_STORE=vault VAULT_TOKEN="$svc_token" "${TOKENSVC_NO_LIMITS[@]}" "${pprof_env[@]}"

bench_machine "$("$vault_bin" version | head -1)"
[[ -z ${VAULT_CPUS:-}${SVC_CPUS:-} ]] || echo "# pinned: Vault on CPUs ${VAULT_CPUS:-any}, tokensvc and the tool on CPUs ${SVC_CPUS:-any}"
echo "# Vault dev server pid $vault_pid on $VAULT_ADDR; tokensvc pid $svc_pid on $url (store vault, cache defaults)"
echo "# tokenbench vault -provision $DEVICES -c $WORKERS -d $DURATION -warmup $WARMUP $*"
TOKENSVC_ADMIN_TOKEN="$admin" VAULT_TOKEN="$raw_token" VAULT_PPROF_TOKEN="${PPROF_OUT:+$vault_root}" bench_run 900 "${svc_pin[@]}" "$work/tokenbench" vault -url "$url" \
	-vault-addr "$VAULT_ADDR" -transit-key bench-raw -server-pid "$svc_pid" -vault-pid "$vault_pid" \
	-provision "$DEVICES" -c "$WORKERS" -d "$DURATION" -warmup "$WARMUP" \
	${metrics_url:+-metrics-url "$metrics_url"} "${pprof_args[@]}" "$@"

bench_tokensvc_stderr
