#!/usr/bin/env bash
# Prints an HS256 device assertion for GET /token, using only openssl — the same steps a
# microcontroller performs. Usage: scripts/assertion.sh DEVICE_ID SECRET [AUDIENCE]
set -euo pipefail
id=$1 secret=$2 aud=${3:-tokensvc}
b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }
now=$(date +%s)
header=$(printf '{"alg":"HS256","typ":"JWT"}' | b64url)
payload=$(printf '{"iss":"%s","sub":"%s","aud":"%s","iat":%d,"exp":%d,"jti":"%s"}' \
  "$id" "$id" "$aud" "$now" $((now + 120)) "$(openssl rand -hex 12)" | b64url)
sig=$(printf '%s.%s' "$header" "$payload" | openssl dgst -sha256 -hmac "$secret" -binary | b64url)
printf '%s.%s.%s\n' "$header" "$payload" "$sig"
