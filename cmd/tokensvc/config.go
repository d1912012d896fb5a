package main

import (
	"io"

	"github.com/tokensvc/tokensvc/internal/app"
	"github.com/tokensvc/tokensvc/internal/audit"
	"github.com/tokensvc/tokensvc/internal/cliflags"
	"github.com/tokensvc/tokensvc/internal/vaultauth"
)

// envPrefix prefixes every option's environment variable: -data-dir is TOKENSVC_DATA_DIR.
const envPrefix = "TOKENSVC_"

// standardEnv are the options that keep the environment names Vault's own tools use.
var standardEnv = map[string]string{
	"vault-addr":      "VAULT_ADDR",
	"vault-cacert":    "VAULT_CACERT",
	"vault-namespace": "VAULT_NAMESPACE",
}

// flagSet declares every option on c, whose current values are the defaults.
func flagSet(c *app.Config, stderr io.Writer) *cliflags.Set {
	s := cliflags.New("tokensvc", envPrefix, stderr)
	for name, env := range standardEnv {
		s.RenameEnv(name, env)
	}
	s.Version()
	s.String(&c.Addr, "addr", "listen address")
	s.String(&c.Store, "store", "key store: embedded or vault")
	s.String(&c.DataDir, "data-dir", "directory of the embedded store")
	s.String(&c.MasterKeyFile, "master-key-file", "file holding the embedded store's base64 master key, created 0600 if absent; default <data-dir>/master.key")
	s.String(&c.Audience, "audience", "aud that device assertions must carry")
	s.String(&c.TLSCert, "tls-cert", "PEM certificate file; serve HTTPS when set with -tls-key")
	s.String(&c.TLSKey, "tls-key", "PEM private key file")
	s.String(&c.ClientAuth, "client-auth", "TLS client certificates for device authentication: off or optional; optional needs -tls-cert")
	s.String(&c.ClientCA, "client-ca", "PEM file of the CA issuing x509-ca devices' client certificates; needs -client-auth optional")
	s.Level(&c.LogLevel, "log-level", "debug, info, warn or error")
	s.Duration(&c.ShutdownTimeout, "shutdown-timeout", "how long in-flight requests may drain on SIGTERM")
	s.String(&c.MetricsAddr, "metrics-addr", "serve /metrics on this address instead of the API listener")
	s.Bool(&c.Pprof, "pprof", "also serve /debug/pprof/ on the metrics address; needs -metrics-addr")
	s.Int(&c.MaxHeaderBytes, "max-header-bytes", "largest request header block accepted")
	s.Int(&c.MaxHandshakes, "max-handshakes", "TLS handshakes run at once; more wait up to 4 s for a slot; 0 disables")
	s.Int(&c.GCHeapFloorMiB, "gc-heap-floor-mb", "heap in MiB below which Go's collector does not run (it then runs at GOGC); 0: Go's own 4 MiB")
	s.Int(&c.StoreCacheSize, "store-cache-size", "embedded store: most decoded devices kept in memory, about 1 KiB each (0: none)")
	s.Int(&c.ImportWorkers, "import-workers", "lines of a bulk import imported at once (1: one after the other; 0: the default, 256 on the embedded store, 64 on Vault); the report stays in input order")
	vaultFlags(s, c)
	opsFlags(s, c)
	replayFlags(s, c)
	s.Secret(&c.AdminToken, "TOKENSVC_ADMIN_TOKEN", "operator bearer token (at least 16 characters); default generated once and printed")
	s.Secret(&c.MasterKey, "TOKENSVC_MASTER_KEY", "the embedded store's master key (base64), instead of the file")
	s.Secret(&c.Vault.Token, "VAULT_TOKEN", "Vault token for -vault-auth token")
	s.Secret(&c.Vault.SecretID, "TOKENSVC_VAULT_SECRET_ID", "AppRole secret ID, instead of -vault-secret-id-file")
	return s
}

// vaultFlags declares the Vault store's options.
func vaultFlags(s *cliflags.Set, c *app.Config) {
	v, vs := &c.Vault, &c.VaultStore
	s.String(&v.Address, "vault-addr", "Vault address")
	s.String(&v.CACert, "vault-cacert", "PEM CA file for Vault's TLS certificate")
	s.String(&v.Namespace, "vault-namespace", "Vault Enterprise namespace")
	cliflags.Func(s, &v.Method, "vault-auth", "Vault auth method: token, approle or kubernetes",
		func(t string) (vaultauth.Method, error) { return vaultauth.Method(t), nil },
		func(m vaultauth.Method) string { return string(m) })
	s.String(&v.Mount, "vault-auth-mount", "auth method mount path; default the method name")
	s.String(&v.RoleID, "vault-role-id", "AppRole role ID")
	s.String(&v.SecretIDFile, "vault-secret-id-file", "file holding the AppRole secret ID")
	s.String(&v.Role, "vault-k8s-role", "Vault Kubernetes auth role")
	s.String(&v.TokenFile, "vault-k8s-token-file", "service-account JWT file")
	s.String(&vs.Mount, "vault-kv-mount", "KV v2 mount")
	s.String(&vs.Prefix, "vault-prefix", "path prefix inside the KV mount, and Transit key name prefix")
	s.String(&vs.TransitMount, "vault-transit-mount", "Transit mount")
	s.String(&vs.PKIMount, "vault-pki-mount", "PKI secrets engine mount that signs device certificates (hubs in mode certificate)")
	s.String(&vs.PKIRole, "vault-pki-role", "PKI role that signs device certificates when a hub names no pkiRole")
	s.Duration(&vs.RequestTimeout, "vault-timeout", "deadline of each Vault call on the request path")
	s.Int(&vs.TransitBatchMax, "vault-transit-batch-max", "most concurrent Transit HMACs (or issuer signatures) with one key sent in one Vault call; 0 or 1 disables batching")
	s.Duration(&vs.TransitBatchWait, "vault-transit-batch-wait", "longest a batch queued behind a call in flight waits to hold as many requests as that call carried; 0 sends it when that call returns (a lone request never waits)")
	s.Switch(&c.Cache.Enabled, "cache", "in-memory key cache in front of Vault: on or off")
	s.Duration(&c.Cache.TTL, "cache-ttl", "how long a cached device or hub is fresh")
	s.Int(&c.Cache.MaxEntries, "cache-size", "most devices and hubs cached")
}

// opsFlags declares the limits, audit and operator-authentication options.
func opsFlags(s *cliflags.Set, c *app.Config) {
	l := &c.Limits
	s.Float(&l.DeviceRate, "device-rate", "token requests per second each device may make, sustained; 0 disables")
	s.Int(&l.DeviceBurst, "device-burst", "token requests a device may make at once")
	s.Float(&l.GlobalRate, "global-rate", "token and nonce requests per second for the whole service; 0 disables")
	s.Int(&l.GlobalBurst, "global-burst", "burst of the service-wide limit; 0 means one second's worth")
	s.Int(&l.MaxInflight, "max-inflight", "concurrent requests served before refusing with 503; 0 disables")
	cliflags.Func(s, &c.Audit.Sink, "audit", "audit records: stdout, off or file:/path", audit.ParseSink, func(k audit.Sink) string {
		if k.Kind == "file" {
			return "file:" + k.Path
		}
		return k.Kind
	})
	s.Int(&c.Audit.MaxMB, "audit-max-mb", "audit file size in MiB at which it is rotated")
	s.Int(&c.Audit.Keep, "audit-keep", "rotated audit files kept")
	o := &c.OIDC
	s.String(&o.Issuer, "oidc-issuer", "accept operator JWTs from this OIDC issuer (exact iss); empty disables")
	s.String(&o.Audience, "oidc-audience", "aud operator JWTs must carry")
	s.String(&o.JWKSURL, "oidc-jwks-url", "the issuer's JWKS; default from its /.well-known/openid-configuration")
	s.String(&o.RolesClaim, "oidc-roles-claim", "claim holding admin, operator or reader; dots walk into objects")
	s.CSV(&o.Algorithms, "oidc-algorithms", "comma-separated JWS algorithms accepted")
	s.Duration(&o.Refresh, "oidc-refresh", "how often the JWKS is refetched")
	i := &c.Issuer
	s.String(&i.Issuer, "issuer-url", "iss of the JWT credentials tokensvc signs (https URL); empty refuses JWT credentials")
	s.Duration(&i.Lead, "issuer-key-lead", "how long a rotated-in issuer key is published before it signs")
	s.Duration(&i.MaxLifetime, "issuer-max-lifetime", "longest credential lifetime a retired issuer key stays published for (hubs allowing longer raise it)")
}

// replayFlags declares the shared replay store's options.
func replayFlags(s *cliflags.Set, c *app.Config) {
	r := &c.Replay
	s.String(&r.URL, "replay-store", "replay store shared by the replicas: redis://[user@]host[:port][/db] or rediss://…; empty keeps used jtis and nonces in each process's memory")
	s.String(&r.PasswordFile, "replay-store-password-file", "file holding the replay store's password")
	s.String(&r.CAFile, "replay-store-ca", "PEM CA file for the replay store's TLS certificate (rediss://)")
	s.Bool(&r.DeviceLimits, "replay-store-device-limits", "also keep the per-device rate-limit buckets in the replay store, shared by the replicas (one more round trip per token)")
	s.Secret(&r.Password, "TOKENSVC_REPLAY_STORE_PASSWORD", "the replay store's password, instead of -replay-store-password-file")
}

// parseConfig reads flags, falling back to the environment, then to app.Defaults, and
// validates the result. With -version it returns cliflags.ErrVersion.
func parseConfig(args []string, getenv func(string) string, stderr io.Writer) (app.Config, error) {
	c := app.Defaults()
	if err := flagSet(&c, stderr).Parse(args, getenv); err != nil {
		return app.Config{}, err
	}
	return c, c.Validate()
}
