# Least-privilege Vault policy for tokensvc with the default mounts (KV v2 at secret/,
# Transit at transit/) and prefix (tokensvc). Change the paths if you change those.
# Tests run the Vault store and the whole service with a token holding exactly this
# policy (vaultstore's TestLeastPrivilegePolicy, cmd/tokensvc's TestVaultOutage).

# Records (hubs, devices, settings, indexes, claims) under the prefix only. Deletes are
# metadata deletes, and replaced secrets have their old versions destroyed. Metadata is
# read only to take over a record whose delete was cut off (its version, no data).
path "secret/data/tokensvc/*" {
  capabilities = ["create", "read", "update"]
}
path "secret/metadata/tokensvc/*" {
  capabilities = ["read", "list", "delete"]
}
path "secret/destroy/tokensvc/*" {
  capabilities = ["update"]
}

# Transit hubs only: import keys (wrapped with Transit's wrapping key), compute HMACs,
# delete keys with their device or hub. Keys are imported non-exportable, and nothing
# here can read one back.
path "transit/wrapping_key" {
  capabilities = ["read"]
}
path "transit/keys/tokensvc-*" {
  capabilities = ["create", "update", "delete"]
}
path "transit/hmac/tokensvc-*" {
  capabilities = ["update"]
}

# Issuer keys (the RS256/ES256 keys JWT credentials are signed with): created in
# Transit as rsa-2048 / ecdsa-p256 (POST is an update there), their public key read
# back, signatures made inside Vault. Not exportable, and nothing here exports or
# deletes one; this more specific path takes the place of the tokensvc-* one above.
path "transit/keys/tokensvc-i-*" {
  capabilities = ["update", "read"]
}
path "transit/sign/tokensvc-i-*" {
  capabilities = ["update"]
}

# Device certificates (hubs in mode certificate): the PKI engine signs CSRs with roles
# named tokensvc-* (the default role is tokensvc-device), and the service reads a role's
# issuer to publish its CA chain. Nothing here reads, exports or imports a CA key, or
# changes a role.
path "pki/sign/tokensvc-*" {
  capabilities = ["update"]
}
path "pki/roles/tokensvc-*" {
  capabilities = ["read"]
}
path "pki/issuer/+/json" {
  capabilities = ["read"]
}

# Readiness and token renewal (the default policy grants these too).
path "auth/token/lookup-self" {
  capabilities = ["read"]
}
path "auth/token/renew-self" {
  capabilities = ["update"]
}
