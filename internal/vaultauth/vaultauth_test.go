package vaultauth_test

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	vault "github.com/hashicorp/vault/api"

	"github.com/tokensvc/tokensvc/internal/testca"
	"github.com/tokensvc/tokensvc/internal/vaultauth"
	"github.com/tokensvc/tokensvc/internal/vaulttest"
)

const testPolicy = `path "secret/data/tokensvc/*" { capabilities = ["create", "read", "update", "delete", "list"] }`

func mustWrite(t *testing.T, c *vault.Client, path string, data map[string]any) *vault.Secret {
	t.Helper()
	s, err := c.Logical().WriteWithContext(t.Context(), path, data)
	if err != nil {
		t.Fatalf("write %s: %v", path, err)
	}
	return s
}

// mustAppRole enables AppRole with a role whose tokens live ttl and can be renewed up to
// maxTTL, and returns its role ID and a secret ID.
func mustAppRole(t *testing.T, root *vault.Client, ttl, maxTTL string) (roleID, secretID string) {
	t.Helper()
	if err := root.Sys().EnableAuthWithOptionsWithContext(t.Context(), "approle", &vault.EnableAuthOptions{Type: "approle"}); err != nil {
		t.Fatal(err)
	}
	if err := root.Sys().PutPolicyWithContext(t.Context(), "tokensvc", testPolicy); err != nil {
		t.Fatal(err)
	}
	mustWrite(t, root, "auth/approle/role/tokensvc", map[string]any{
		"token_policies": "tokensvc", "token_ttl": ttl, "token_max_ttl": maxTTL,
	})
	r, err := root.Logical().ReadWithContext(t.Context(), "auth/approle/role/tokensvc/role-id")
	if err != nil {
		t.Fatal(err)
	}
	s := mustWrite(t, root, "auth/approle/role/tokensvc/secret-id", nil)
	return r.Data["role_id"].(string), s.Data["secret_id"].(string)
}

func mustClient(t *testing.T, srv *vaulttest.Server) *vault.Client {
	t.Helper()
	c, err := vaultauth.NewClient(vaultauth.Config{Address: srv.Addr})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestAppRoleRenewsAndLogsInAgain runs the Authenticator against a real Vault whose
// AppRole tokens live 2 s and can be renewed only up to 4 s: it must renew, then log in
// again when renewal ends, and the client must keep working throughout.
func TestAppRoleRenewsAndLogsInAgain(t *testing.T) {
	srv := vaulttest.Start(t)
	roleID, secretID := mustAppRole(t, srv.Client(t), "2s", "4s")
	client := mustClient(t, srv)
	a := vaultauth.New(client, vaultauth.Config{Method: vaultauth.MethodAppRole, RoleID: roleID, SecretID: secretID}, nil)

	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()

	// Vault's clock drives this test: poll what the Authenticator reports.
	deadline := time.Now().Add(20 * time.Second)
	for {
		logins, renewals := a.Counts()
		if logins >= 2 && renewals >= 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 20 s: got %d logins and %d renewals, want ≥ 2 and ≥ 1", logins, renewals)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if err := a.Ready(); err != nil {
		t.Fatalf("Ready: got %v, want nil", err)
	}
	if _, err := client.Logical().WriteWithContext(t.Context(), "secret/data/tokensvc/probe", map[string]any{"data": map[string]any{"x": "y"}}); err != nil {
		t.Fatalf("the client's token no longer works: %v", err)
	}
}

func TestLoginFailures(t *testing.T) {
	srv := vaulttest.Start(t)
	roleID, _ := mustAppRole(t, srv.Client(t), "1m", "10m")
	tests := []struct {
		name string
		cfg  vaultauth.Config
		ok   bool
	}{
		{"root token", vaultauth.Config{Method: vaultauth.MethodToken, Token: srv.RootToken}, true},
		{"unknown token", vaultauth.Config{Method: vaultauth.MethodToken, Token: "hvs.nope"}, false},
		{"approle with a wrong secret ID", vaultauth.Config{Method: vaultauth.MethodAppRole, RoleID: roleID, SecretID: "wrong"}, false},
		{"approle secret ID file missing", vaultauth.Config{Method: vaultauth.MethodAppRole, RoleID: roleID, SecretIDFile: "/nonexistent"}, false},
		{"kubernetes token file missing", vaultauth.Config{Method: vaultauth.MethodKubernetes, Role: "r", TokenFile: "/nonexistent"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := vaultauth.New(mustClient(t, srv), tt.cfg, nil)
			_, err := a.Login(t.Context())
			if (err == nil) != tt.ok {
				t.Fatalf("Login: got %v, want ok=%v", err, tt.ok)
			}
			if (a.Ready() == nil) != tt.ok {
				t.Errorf("Ready: got %v, want ok=%v", a.Ready(), tt.ok)
			}
		})
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  vaultauth.Config
		ok   bool
	}{
		{"token", vaultauth.Config{Address: "http://v", Method: vaultauth.MethodToken, Token: "t"}, true},
		{"no address", vaultauth.Config{Method: vaultauth.MethodToken, Token: "t"}, false},
		{"token missing", vaultauth.Config{Address: "http://v", Method: vaultauth.MethodToken}, false},
		{"approle", vaultauth.Config{Address: "http://v", Method: vaultauth.MethodAppRole, RoleID: "r", SecretIDFile: "f"}, true},
		{"approle without secret", vaultauth.Config{Address: "http://v", Method: vaultauth.MethodAppRole, RoleID: "r"}, false},
		{"kubernetes", vaultauth.Config{Address: "http://v", Method: vaultauth.MethodKubernetes, Role: "tokensvc"}, true},
		{"kubernetes without role", vaultauth.Config{Address: "http://v", Method: vaultauth.MethodKubernetes}, false},
		{"unknown method", vaultauth.Config{Address: "http://v", Method: "ldap"}, false},
	}
	for _, tt := range tests {
		if err := tt.cfg.Validate(); (err == nil) != tt.ok {
			t.Errorf("%s: got %v, want ok=%v", tt.name, err, tt.ok)
		}
	}
}

// TestKubernetesLogin logs in with Vault's real Kubernetes auth method. There is no
// cluster here, so the one thing faked is the Kubernetes API's TokenReview endpoint that
// Vault calls to check the service-account JWT: it approves exactly the JWT it was given.
func TestKubernetesLogin(t *testing.T) {
	srv := vaulttest.Start(t)
	root := srv.Client(t)

	const ns, sa, uid = "iot", "tokensvc", "6f3c1d2e-0000-4000-8000-000000000001"
	clusterKey := testca.P256Key(t)
	// Vault accepts only the algorithms Kubernetes signs with; it does not check the
	// signature itself unless given the cluster's public keys (the TokenReview does).
	saJWT, err := jwt.NewWithClaims(jwt.SigningMethodES256, jwt.MapClaims{
		"iss":                                    "kubernetes/serviceaccount",
		"sub":                                    "system:serviceaccount:" + ns + ":" + sa,
		"kubernetes.io/serviceaccount/namespace": ns,
		"kubernetes.io/serviceaccount/service-account.name": sa,
		"kubernetes.io/serviceaccount/service-account.uid":  uid,
	}).SignedString(clusterKey)
	if err != nil {
		t.Fatal(err)
	}
	var reviews atomic.Int32
	api := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/apis/authentication.k8s.io/v1/tokenreviews" {
			http.NotFound(w, r)
			return
		}
		var review struct {
			Spec struct{ Token string } `json:"spec"`
		}
		_ = json.NewDecoder(r.Body).Decode(&review)
		reviews.Add(1)
		status := map[string]any{"authenticated": false}
		if review.Spec.Token == saJWT {
			status = map[string]any{"authenticated": true, "user": map[string]any{
				"username": "system:serviceaccount:" + ns + ":" + sa, "uid": uid,
				"groups": []string{"system:serviceaccounts", "system:serviceaccounts:" + ns},
			}}
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "status": status})
	}))
	defer api.Close()
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: api.Certificate().Raw})

	if err := root.Sys().EnableAuthWithOptionsWithContext(t.Context(), "k8s-test", &vault.EnableAuthOptions{Type: "kubernetes"}); err != nil {
		t.Fatal(err)
	}
	mustWrite(t, root, "auth/k8s-test/config", map[string]any{
		"kubernetes_host": api.URL, "kubernetes_ca_cert": string(caPEM),
		"token_reviewer_jwt": "reviewer", "disable_local_ca_jwt": true,
	})
	mustWrite(t, root, "auth/k8s-test/role/tokensvc", map[string]any{
		"bound_service_account_names": sa, "bound_service_account_namespaces": ns, "token_ttl": "1h",
	})

	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(saJWT+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	client := mustClient(t, srv)
	a := vaultauth.New(client, vaultauth.Config{Method: vaultauth.MethodKubernetes, Mount: "k8s-test", Role: "tokensvc", TokenFile: tokenFile}, nil)
	secret, err := a.Login(t.Context())
	if err != nil {
		t.Fatalf("kubernetes login (after %d token reviews): %v", reviews.Load(), err)
	}
	if reviews.Load() == 0 {
		t.Fatal("Vault never asked the TokenReview API; the login proved nothing")
	}
	if secret.Auth.ClientToken == "" || client.Token() != secret.Auth.ClientToken {
		t.Fatalf("client token: got %q, want the login's token", client.Token())
	}
	if _, err := client.Auth().Token().LookupSelfWithContext(t.Context()); err != nil {
		t.Fatalf("the new token does not work: %v", err)
	}

	// A well-formed JWT with the same claims that the cluster does not vouch for (signed
	// by another key) must be refused: Vault has to ask, and act on the answer.
	forgedKey := testca.P256Key(t)
	forged, err := jwt.NewWithClaims(jwt.SigningMethodES256, jwt.MapClaims{
		"iss": "kubernetes/serviceaccount", "sub": "system:serviceaccount:" + ns + ":" + sa,
		"kubernetes.io/serviceaccount/namespace": ns, "kubernetes.io/serviceaccount/service-account.name": sa,
		"kubernetes.io/serviceaccount/service-account.uid": uid,
	}).SignedString(forgedKey)
	if err != nil {
		t.Fatal(err)
	}
	before := reviews.Load()
	other := vaultauth.New(mustClient(t, srv), vaultauth.Config{Method: vaultauth.MethodKubernetes, Mount: "k8s-test", Role: "tokensvc", TokenFile: writeFile(t, forged)}, nil)
	if _, err := other.Login(t.Context()); err == nil {
		t.Fatal("login with a JWT the TokenReview refused: got success, want an error")
	}
	if reviews.Load() == before {
		t.Error("the forged JWT was refused without a TokenReview; the refusal proves nothing")
	}
}

func writeFile(t *testing.T, s string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestReloginKeepsToken checks that the client keeps its token while a login is under
// way and after one fails: store calls share the client, and one sent without a token
// is refused (403), which device requests would see as a 500. The fake Vault holds the
// second login until told, which a real one cannot be made to do.
func TestReloginKeepsToken(t *testing.T) {
	var (
		logins      atomic.Int32
		loginHeld   = make(chan struct{})
		release     = make(chan struct{})
		failLogins  atomic.Bool
		loginTokens = make(chan string, 10) // X-Vault-Token of each login request
		loginNS     = make(chan string, 10) // X-Vault-Namespace of each login request
	)
	fake := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		switch r.URL.Path {
		case "/v1/auth/approle/login":
			loginTokens <- r.Header.Get("X-Vault-Token")
			loginNS <- r.Header.Get("X-Vault-Namespace")
			if failLogins.Load() {
				http.Error(w, `{"errors":["sealed"]}`, http.StatusServiceUnavailable)
				return
			}
			n := logins.Add(1)
			if n == 2 {
				close(loginHeld)
				<-release
			}
			_ = json.NewEncoder(w).Encode(map[string]any{"auth": map[string]any{
				"client_token": "tok-" + strconv.Itoa(int(n)), "renewable": true, "lease_duration": 3600,
			}})
		case "/v1/secret/data/probe":
			// Echo the token the store call carried.
			_ = json.NewEncoder(w).Encode(map[string]any{"data": map[string]any{"token": r.Header.Get("X-Vault-Token")}})
		default:
			http.NotFound(w, r)
		}
	}))
	defer fake.Close()

	client, err := vaultauth.NewClient(vaultauth.Config{Address: fake.URL, Namespace: "iot"})
	if err != nil {
		t.Fatal(err)
	}
	a := vaultauth.New(client, vaultauth.Config{Method: vaultauth.MethodAppRole, RoleID: "r", SecretID: "s"}, nil)
	storeCall := func() string {
		t.Helper()
		s, err := client.Logical().ReadWithContext(t.Context(), "secret/data/probe")
		if err != nil {
			t.Fatalf("store call: %v", err)
		}
		return s.Data["token"].(string)
	}

	if _, err := a.Login(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := storeCall(); got != "tok-1" {
		t.Fatalf("after the first login: store call carried %q, want tok-1", got)
	}

	done := make(chan error, 1)
	go func() { _, err := a.Login(t.Context()); done <- err }()
	<-loginHeld
	if got := storeCall(); got != "tok-1" {
		t.Errorf("during a re-login: store call carried %q, want the old token tok-1", got)
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := storeCall(); got != "tok-2" {
		t.Errorf("after the re-login: store call carried %q, want tok-2", got)
	}

	failLogins.Store(true)
	if _, err := a.Login(t.Context()); err == nil {
		t.Fatal("login against a failing Vault: got success, want an error")
	}
	if got := storeCall(); got != "tok-2" {
		t.Errorf("after a failed login: store call carried %q, want the last token tok-2", got)
	}
	close(loginTokens)
	close(loginNS)
	for tok := range loginTokens {
		if tok != "" {
			t.Error("a login request carried a token")
		}
	}
	for ns := range loginNS {
		if ns != "iot" {
			t.Errorf("login request namespace: got %q, want iot", ns)
		}
	}
}

// TestTokenMethodExpiringToken gives the token method real tokens that expire: one
// that cannot be renewed and lives 3 s, and one renewable every 2 s up to 4 s. The
// configured token is the only one the method has: once it has expired the
// Authenticator must report itself unready (not mistake a TTL that reads 0 in the
// token's last second for a token that never expires), and it must not look the token
// up ever more often as its TTL shrinks.
func TestTokenMethodExpiringToken(t *testing.T) {
	srv := vaulttest.Start(t)
	root := srv.Client(t)
	if err := root.Sys().PutPolicyWithContext(t.Context(), "tokensvc", testPolicy); err != nil {
		t.Fatal(err)
	}
	yes, no := true, false
	for _, tt := range []struct {
		name string
		req  vault.TokenCreateRequest
	}{
		{"non-renewable", vault.TokenCreateRequest{TTL: "3s", Renewable: &no}},
		{"renewable up to a max TTL", vault.TokenCreateRequest{TTL: "2s", ExplicitMaxTTL: "4s", Renewable: &yes}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tt.req.Policies = []string{"tokensvc"}
			tok, err := root.Auth().Token().CreateWithContext(t.Context(), &tt.req)
			if err != nil {
				t.Fatal(err)
			}
			var lookups atomic.Int32
			proxy := httptest.NewServer(countingProxy(t, srv.Addr, "/v1/auth/token/lookup-self", &lookups))
			defer proxy.Close()
			client, err := vaultauth.NewClient(vaultauth.Config{Address: proxy.URL})
			if err != nil {
				t.Fatal(err)
			}
			a := vaultauth.New(client, vaultauth.Config{Method: vaultauth.MethodToken, Token: tok.Auth.ClientToken}, nil)
			ctx, cancel := context.WithCancel(t.Context())
			done := make(chan error, 1)
			go func() { done <- a.Run(ctx) }()
			defer func() {
				cancel()
				<-done
			}()

			// Vault's clock drives this test: poll what the Authenticator reports.
			deadline := time.Now().Add(20 * time.Second)
			for a.Ready() == nil || lookups.Load() == 0 {
				if time.Now().After(deadline) {
					t.Fatalf("20 s after a token of at most 4 s was configured: Ready is still nil (%d lookups)", lookups.Load())
				}
				time.Sleep(100 * time.Millisecond)
			}
			// A lookup at start, one after renewal ends, one when the token should have
			// gone, then one per backoff step: a handful, where looking up at 80% of an
			// ever shrinking TTL makes dozens in the token's last second.
			if n := lookups.Load(); n > 6 {
				t.Errorf("the token was looked up %d times in its life, want at most 6", n)
			}
		})
	}
}

// countingProxy forwards to the Vault at addr and counts the requests for path.
func countingProxy(t *testing.T, addr, path string, n *atomic.Int32) http.Handler {
	t.Helper()
	target, err := url.Parse(addr)
	if err != nil {
		t.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(target)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == path {
			n.Add(1)
		}
		rp.ServeHTTP(w, r)
	})
}

// TestFailedRequestKeepsOthersConnections: vault/api's retrying layer
// (go-retryablehttp) closes the shared client's idle connections whenever one request
// fails for good — a device request past its deadline, a caller gone — which makes
// every other caller dial again and fails a request that was just taking one of those
// connections ("CloseIdleConnections called"). The client NewClient returns keeps its
// pool: after a request fails on a canceled context, the next one reuses the idle
// connection of the one before.
func TestFailedRequestKeepsOthersConnections(t *testing.T) {
	srv := vaulttest.Start(t)
	c := mustClient(t, srv)
	c.SetToken(srv.RootToken)
	read := func(ctx context.Context) error {
		_, err := c.Logical().ReadWithContext(ctx, "sys/mounts/secret")
		return err
	}
	if err := read(t.Context()); err != nil {
		t.Fatal(err)
	}
	canceled, cancel := context.WithCancel(t.Context())
	cancel()
	if err := read(canceled); err == nil {
		t.Fatal("a read on a canceled context succeeded")
	}
	var reused atomic.Bool
	trace := httptrace.WithClientTrace(t.Context(), &httptrace.ClientTrace{
		GotConn: func(i httptrace.GotConnInfo) { reused.Store(i.Reused) },
	})
	if err := read(trace); err != nil {
		t.Fatal(err)
	}
	if !reused.Load() {
		t.Error("the read after a failed one dialled a new connection: the failure closed the pool's idle connections")
	}
}
