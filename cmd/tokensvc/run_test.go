package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/tokensvc/tokensvc/internal/apptest"
	"github.com/tokensvc/tokensvc/internal/oapi"
	"github.com/tokensvc/tokensvc/internal/signer"
	"github.com/tokensvc/tokensvc/internal/syncbuf"
)

// instance is one tokensvc started through run, as main starts it.
type instance struct {
	url    string
	stdout *syncbuf.Buffer
	stderr *syncbuf.Buffer
	cancel context.CancelFunc
	done   chan error
}

// mustStart runs the service on a free loopback port with env as its environment and
// waits for its "listening" log line.
func mustStart(t *testing.T, env map[string]string) *instance {
	t.Helper()
	env["TOKENSVC_ADDR"] = "127.0.0.1:0"
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	in := &instance{stdout: &syncbuf.Buffer{}, stderr: &syncbuf.Buffer{}, cancel: cancel, done: make(chan error, 1)}
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			line := sc.Text()
			in.stderr.Write([]byte(line + "\n"))
			var rec struct{ Msg, Addr string }
			if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "listening" {
				addr <- rec.Addr
			}
		}
	}()
	go func() {
		in.done <- run(ctx, nil, func(k string) string { return env[k] }, in.stdout, pw)
		pw.Close()
	}()
	select {
	case a := <-addr:
		in.url = "http://" + a
		if env["TOKENSVC_TLS_CERT"] != "" {
			in.url = "https://" + a
		}
	case err := <-in.done:
		t.Fatalf("run exited early: %v\n%s", err, in.stderr.String())
	case <-time.After(10 * time.Second):
		t.Fatal("service did not start")
	}
	t.Cleanup(func() {
		in.stop(t)
		if t.Failed() {
			t.Logf("service log:\n%s", in.stderr.String())
		}
	})
	return in
}

// stop sends the equivalent of SIGTERM and waits for a clean exit.
func (in *instance) stop(t *testing.T) {
	t.Helper()
	if in.cancel == nil {
		return
	}
	in.cancel()
	in.cancel = nil
	select {
	case err := <-in.done:
		if err != nil {
			t.Errorf("run: got %v, want a clean exit", err)
		}
	case <-time.After(10 * time.Second):
		t.Error("service did not stop within 10 s")
	}
}

// client is the generated client for url, sending bearer (when not empty) on every
// request.
func client(t *testing.T, url, bearer string) *oapi.ClientWithResponses {
	t.Helper()
	return apptest.NewClient(t, url, bearer, &http.Client{})
}

// mainHub is the IoT hub most tests here create first.
var mainHub = oapi.HubCreate{Name: "main", Kind: oapi.Iothub, Hostname: "contoso-hub.azure-devices.net"}

// hs256 is the body creating HS256 device id on hub.
func hs256(id, hub string) oapi.DeviceCreate {
	return oapi.DeviceCreate{DeviceId: id, Hub: hub, Auth: oapi.CredentialCreate{Type: oapi.Hs256}}
}

var adminTokenLine = regexp.MustCompile(`generated admin token \(shown once, store it now\): (tsa_\S+)`)

// TestRunEndToEnd is the README walkthrough: first start prints an admin token, the
// operator provisions a hub and a device, the device gets a token; a restart keeps
// everything and does not print the token again; nothing secret reaches the log or the
// data directory in plaintext.
func TestRunEndToEnd(t *testing.T) {
	dir := t.TempDir()
	env := map[string]string{"TOKENSVC_DATA_DIR": dir, "TOKENSVC_AUDIENCE": "tokensvc"}
	in := mustStart(t, env)

	m := adminTokenLine.FindStringSubmatch(in.stdout.String())
	if m == nil {
		t.Fatalf("first start printed no admin token: %q", in.stdout.String())
	}
	admin := m[1]
	ctx := t.Context()
	c := client(t, in.url, admin)
	apptest.PostHub(t, c, mainHub)
	dev := apptest.PostDevice(t, c, hs256("sensor-0001", "main"))
	secret, primary := *dev.Auth.Secret, *dev.PrimaryKey

	// A refused assertion must not reach the log either.
	forged := assertionFor(t, "sensor-0001", "not-the-secret", "jti-forged")
	if resp, err := client(t, in.url, forged).GetTokenWithResponse(ctx, nil); err != nil || resp.StatusCode() != 401 {
		t.Fatalf("forged assertion: got %v %v, want 401", resp.StatusCode(), err)
	}
	assertion := assertionFor(t, "sensor-0001", secret, "jti-1")
	token := getTokenWith(t, in.url, assertion)
	key, _ := signer.DecodeKey(primary, signer.KeyBase64)
	if _, err := signer.Verify(token, key, time.Now()); err != nil {
		t.Fatalf("minted token does not verify: %v", err)
	}
	in.stop(t)

	// Restart on the same data directory: the device, its keys and the admin hash persist.
	in2 := mustStart(t, env)
	if strings.Contains(in2.stdout.String(), "admin token") {
		t.Errorf("restart printed an admin token again: %q", in2.stdout.String())
	}
	token2 := getToken(t, in2.url, "sensor-0001", secret, "jti-2")
	if _, err := signer.Verify(token2, key, time.Now()); err != nil {
		t.Fatalf("token after restart does not verify: %v", err)
	}
	got, err := client(t, in2.url, admin).GetDeviceWithResponse(ctx, "sensor-0001")
	if err != nil || got.JSON200 == nil {
		t.Fatalf("admin token after restart: %v %d", err, got.StatusCode())
	}
	in2.stop(t)

	secrets := map[string]string{
		"admin token": admin, "device secret": secret, "primary key": primary, "token": token,
		"token signature": sigOf(t, token), "assertion": assertion, "forged assertion": forged,
		"assertion signature": assertion[strings.LastIndexByte(assertion, '.')+1:],
	}
	logs := in.stderr.String() + in2.stderr.String()
	if !strings.Contains(logs, `"msg":"token issued"`) || !strings.Contains(logs, `"msg":"authentication failed"`) {
		t.Fatalf("no request log captured; the scan below would prove nothing:\n%s", logs)
	}
	var files []string
	filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err == nil && !info.IsDir() {
			files = append(files, p)
		}
		return nil
	})
	for name, s := range secrets {
		if strings.Contains(logs, s) {
			t.Errorf("the log contains the %s", name)
		}
		for _, f := range files {
			b, _ := os.ReadFile(f)
			if strings.Contains(string(b), s) {
				t.Errorf("%s holds the %s in plaintext", f, name)
			}
		}
	}
	if fi, err := os.Stat(filepath.Join(dir, "master.key")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("master key file: got %v %v, want mode 0600", fi.Mode(), err)
	}
}

func sigOf(t *testing.T, token string) string {
	p, err := signer.Parse(token)
	if err != nil {
		t.Fatal(err)
	}
	return p.Signature
}

func assertionFor(t *testing.T, id, secret, jti string) string {
	t.Helper()
	now := time.Now()
	a, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
		"iss": id, "sub": id, "aud": "tokensvc", "iat": now.Unix(), "exp": now.Add(time.Minute).Unix(), "jti": jti,
	}).SignedString([]byte(secret))
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func getToken(t *testing.T, url, id, secret, jti string) string {
	t.Helper()
	return getTokenWith(t, url, assertionFor(t, id, secret, jti))
}

func getTokenWith(t *testing.T, url, assertion string) string {
	t.Helper()
	resp, err := client(t, url, assertion).GetTokenWithResponse(t.Context(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.JSON200 == nil {
		t.Fatalf("GET /token: got %d %s", resp.StatusCode(), resp.Body)
	}
	return resp.JSON200.Token
}

func TestConfigValidation(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		wantErr string
	}{
		{"defaults", nil, nil, ""},
		{"flag beats env", []string{"-addr", ":9000"}, map[string]string{"TOKENSVC_ADDR": ":1"}, ""},
		{"unknown store", nil, map[string]string{"TOKENSVC_STORE": "redis"}, `store "redis"`},
		{"vault without address", nil, map[string]string{"TOKENSVC_STORE": "vault", "VAULT_TOKEN": "t"}, "VAULT_ADDR"},
		{"vault token auth without token", nil, map[string]string{"TOKENSVC_STORE": "vault", "VAULT_ADDR": "http://v"}, "VAULT_TOKEN"},
		{"vault approle", nil, map[string]string{"TOKENSVC_STORE": "vault", "VAULT_ADDR": "http://v", "TOKENSVC_VAULT_AUTH": "approle", "TOKENSVC_VAULT_ROLE_ID": "r", "TOKENSVC_VAULT_SECRET_ID": "s"}, ""},
		{"vault bad timeout", nil, map[string]string{"TOKENSVC_STORE": "vault", "VAULT_ADDR": "http://v", "VAULT_TOKEN": "t", "TOKENSVC_VAULT_TIMEOUT": "fast"}, "vault timeout"},
		{"cache neither on nor off", []string{"-cache", "maybe"}, nil, "want on or off"},
		{"tls half set", []string{"-tls-cert", "c.pem"}, nil, "together"},
		{"client auth optional", []string{"-tls-cert", "c.pem", "-tls-key", "k.pem"}, map[string]string{"TOKENSVC_CLIENT_AUTH": "optional", "TOKENSVC_CLIENT_CA": "ca.pem"}, ""},
		{"client auth optional without tls", nil, map[string]string{"TOKENSVC_CLIENT_AUTH": "optional"}, "needs tls cert"},
		{"client auth required", []string{"-tls-cert", "c.pem", "-tls-key", "k.pem", "-client-auth", "require"}, nil, "want off or optional"},
		{"client ca without client auth", []string{"-tls-cert", "c.pem", "-tls-key", "k.pem", "-client-ca", "ca.pem"}, nil, "client ca needs client auth optional"},
		{"short admin token", nil, map[string]string{"TOKENSVC_ADMIN_TOKEN": "short"}, "at least 16"},
		{"bad log level", []string{"-log-level", "loud"}, nil, "log level"},
		{"bad shutdown timeout", nil, map[string]string{"TOKENSVC_SHUTDOWN_TIMEOUT": "soon"}, "shutdown timeout"},
		{"empty audience", []string{"-audience", ""}, nil, "audience"},
		{"stray argument", []string{"serve"}, nil, "unexpected arguments"},
		{"limits set", nil, map[string]string{"TOKENSVC_DEVICE_RATE": "0.5", "TOKENSVC_DEVICE_BURST": "3", "TOKENSVC_GLOBAL_RATE": "200", "TOKENSVC_MAX_INFLIGHT": "64"}, ""},
		{"device rate not a number", nil, map[string]string{"TOKENSVC_DEVICE_RATE": "fast"}, "device rate"},
		{"negative global rate", nil, map[string]string{"TOKENSVC_GLOBAL_RATE": "-1"}, "not negative"},
		{"device burst zero with a rate", nil, map[string]string{"TOKENSVC_DEVICE_BURST": "0"}, "device burst"},
		{"negative max inflight", nil, map[string]string{"TOKENSVC_MAX_INFLIGHT": "-1"}, "max inflight"},
		{"tiny header limit", nil, map[string]string{"TOKENSVC_MAX_HEADER_BYTES": "100"}, "max header bytes"},
		{"import one line at a time", []string{"-import-workers", "1"}, nil, ""},
		{"import workers zero: the default", nil, map[string]string{"TOKENSVC_IMPORT_WORKERS": "0"}, ""},
		{"import workers negative", nil, map[string]string{"TOKENSVC_IMPORT_WORKERS": "-1"}, "import workers"},
		{"import workers too many", []string{"-import-workers", "100000"}, nil, "import workers"},
		{"store cache off", []string{"-store-cache-size", "0"}, nil, ""},
		{"store cache negative", nil, map[string]string{"TOKENSVC_STORE_CACHE_SIZE": "-1"}, "store cache size"},
		{"store cache too large", []string{"-store-cache-size", "2000000"}, nil, "store cache size"},
		{"audit file", nil, map[string]string{"TOKENSVC_AUDIT": "file:/tmp/a.log", "TOKENSVC_AUDIT_KEEP": "0"}, ""},
		{"audit unknown sink", nil, map[string]string{"TOKENSVC_AUDIT": "syslog"}, "want stdout, off or file"},
		{"audit file zero size", nil, map[string]string{"TOKENSVC_AUDIT": "file:/tmp/a.log", "TOKENSVC_AUDIT_MAX_MB": "0"}, "audit max mb"},
		{"oidc", nil, map[string]string{"TOKENSVC_OIDC_ISSUER": "https://login.example.com/realms/iot", "TOKENSVC_OIDC_AUDIENCE": "tokensvc"}, ""},
		{"oidc without audience", nil, map[string]string{"TOKENSVC_OIDC_ISSUER": "https://login.example.com"}, "oidc audience"},
		{"oidc over http", nil, map[string]string{"TOKENSVC_OIDC_ISSUER": "http://login.example.com", "TOKENSVC_OIDC_AUDIENCE": "a"}, "must be https"},
		{"oidc loopback http", nil, map[string]string{"TOKENSVC_OIDC_ISSUER": "http://127.0.0.1:9999", "TOKENSVC_OIDC_AUDIENCE": "a"}, ""},
		{"oidc bad jwks url", nil, map[string]string{"TOKENSVC_OIDC_ISSUER": "https://i.example", "TOKENSVC_OIDC_AUDIENCE": "a", "TOKENSVC_OIDC_JWKS_URL": "keys"}, "not an absolute URL"},
		{"oidc refresh too often", nil, map[string]string{"TOKENSVC_OIDC_ISSUER": "https://i.example", "TOKENSVC_OIDC_AUDIENCE": "a", "TOKENSVC_OIDC_REFRESH": "1s"}, "oidc refresh"},
		{"metrics on the API address", []string{"-addr", ":9000", "-metrics-addr", ":9000"}, nil, "metrics address"},
		{"replay store", nil, map[string]string{"TOKENSVC_REPLAY_STORE": "rediss://tokensvc@redis.iot:6380/1", "TOKENSVC_REPLAY_STORE_PASSWORD": "pw", "TOKENSVC_REPLAY_STORE_CA": "ca.pem"}, ""},
		{"replay store password in the URL", nil, map[string]string{"TOKENSVC_REPLAY_STORE": "redis://u:pw@redis.iot"}, "carries a password"},
		{"replay store not redis", []string{"-replay-store", "memcached://m"}, nil, "want redis:// or rediss://"},
		{"replay store two passwords", nil, map[string]string{"TOKENSVC_REPLAY_STORE": "redis://r", "TOKENSVC_REPLAY_STORE_PASSWORD": "pw", "TOKENSVC_REPLAY_STORE_PASSWORD_FILE": "/pw"}, "not both"},
		{"replay store CA without TLS", nil, map[string]string{"TOKENSVC_REPLAY_STORE": "redis://r", "TOKENSVC_REPLAY_STORE_CA": "ca.pem"}, "rediss"},
		{"replay store password without the store", nil, map[string]string{"TOKENSVC_REPLAY_STORE_PASSWORD": "pw"}, "need TOKENSVC_REPLAY_STORE"},
		{"shared device limits", nil, map[string]string{"TOKENSVC_REPLAY_STORE": "redis://r", "TOKENSVC_REPLAY_STORE_DEVICE_LIMITS": "true"}, ""},
		{"shared device limits without the store", []string{"-replay-store-device-limits"}, nil, "need TOKENSVC_REPLAY_STORE"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := parseConfig(tt.args, func(k string) string { return tt.env[k] }, io.Discard)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("got %v, want no error", err)
				}
				if tt.name == "flag beats env" && c.Addr != ":9000" {
					t.Errorf("addr: got %q, want :9000", c.Addr)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("got %v, want an error containing %q", err, tt.wantErr)
			}
		})
	}
}
