package httpapi_test

import (
	"crypto/ecdsa"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/golang-jwt/jwt/v5"

	"github.com/tokensvc/tokensvc/internal/app"
	"github.com/tokensvc/tokensvc/internal/audit"
	"github.com/tokensvc/tokensvc/internal/limits"
	"github.com/tokensvc/tokensvc/internal/oapi"
)

// BenchmarkGetToken is the whole GET /token path in-process: routing, spec validation,
// HS256 assertion check with replay cache, store read, minting, profiles and JSON.
// Assertions are signed before the timed loop (each jti is single-use). Limits and
// audit are off (metrics are always wired); BenchmarkGetTokenObserved has them on.
func BenchmarkGetToken(b *testing.B) {
	benchGetToken(b, mustBenchEnv(b))
}

// BenchmarkGetTokenNewGoroutine serves each request on a goroutine of its own, as
// net/http serves each new connection (a boot storm): it counts what the path costs on
// a fresh goroutine's stack, which BenchmarkGetToken's one goroutine, its stack long
// grown, does not see.
func BenchmarkGetTokenNewGoroutine(b *testing.B) {
	benchGetTokenServed(b, mustBenchEnv(b), func(h http.Handler, w http.ResponseWriter, r *http.Request) {
		done := make(chan struct{})
		go func() {
			defer close(done)
			h.ServeHTTP(w, r)
		}()
		<-done
	})
}

func benchGetToken(b *testing.B, e *env) {
	benchGetTokenServed(b, e, http.Handler.ServeHTTP)
}

// benchGetTokenServed runs GET /token requests, each handed to the handler by serve.
func benchGetTokenServed(b *testing.B, e *env, serve func(http.Handler, http.ResponseWriter, *http.Request)) {
	h, assertions := tokenBenchSetup(b, e)
	benchAsserted(b, assertions, func() *http.Request {
		return httptest.NewRequest(http.MethodGet, "/token", nil)
	}, func(w http.ResponseWriter, r *http.Request) { serve(h, w, r) }, nil)
}

// benchAsserted is the timed loop of the benchmarks that send device assertions: each
// iteration serves a request from newReq carrying the next of assertions (signed
// before the loop, each jti single-use) as its bearer token, and fails the benchmark on
// an answer ok refuses (nil ok: anything but 200).
func benchAsserted(b *testing.B, assertions []string, newReq func() *http.Request,
	serve http.HandlerFunc, ok func(*httptest.ResponseRecorder) bool) {
	b.Helper()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if i == len(assertions) {
			b.Fatal("assertion pool exhausted; raise pool")
		}
		req := newReq()
		req.Header.Set("Authorization", "Bearer "+assertions[i])
		i++
		rec := httptest.NewRecorder()
		serve(rec, req)
		if ok == nil && rec.Code != http.StatusOK || ok != nil && !ok(rec) {
			b.Fatalf("got %d %.300s", rec.Code, rec.Body)
		}
	}
}

// tokenBenchSetup creates a hub and an HS256 device in e and signs the assertions the
// GET /token benchmarks send.
func tokenBenchSetup(b *testing.B, e *env) (http.Handler, []string) {
	e.mustHub(oapi.HubCreate{Name: "main", Kind: oapi.Iothub, Hostname: hubHost})
	dev := e.mustDevice(oapi.DeviceCreate{DeviceId: "bench-1", Hub: "main", Auth: oapi.CredentialCreate{Type: oapi.Hs256}})
	return e.handler, e.assertionPool(b, "bench-1", []byte(*dev.Auth.Secret), 300_000)
}

// assertionPool signs n HS256 assertions of device id before a timed loop (each jti
// is single-use).
func (e *env) assertionPool(b *testing.B, id string, secret []byte, n int) []string {
	b.Helper()
	out := make([]string, 0, n)
	for i := range n {
		c := e.claims(id)
		c["jti"] = strconv.Itoa(i)
		s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString(secret)
		if err != nil {
			b.Fatal(err)
		}
		out = append(out, s)
	}
	return out
}

// mustBenchEnv is the env the benchmarks share: limits and audit off (metrics are
// always wired).
func mustBenchEnv(b *testing.B) *env {
	b.Helper()
	return mustEnvWith(b, envOptions{config: func(c *app.Config) {
		c.Limits = limits.Config{}
		c.Audit.Sink.Kind = "off"
	}})
}

// BenchmarkGetTokenStorm is a boot storm's handler work in process: each request is
// another ES256 device, read from the embedded store for the first time since its
// import (its decoded record not cached yet), and is served on a goroutine of its
// own, with the limits at their defaults, audit records written to a file and the log
// at warn, as scripts/bench-storm.sh runs tokensvc. What it costs beyond one ES256
// verification is the storm's non-cryptographic overhead without TCP, TLS and
// net/http; its CPU profile (-cpuprofile) says where that goes. Each run imports b.N
// devices first (-benchtime=10000x keeps that short).
func BenchmarkGetTokenStorm(b *testing.B) {
	e := mustEnvWith(b, envOptions{logLevel: slog.LevelWarn, config: func(c *app.Config) {
		c.Audit.Sink = audit.Sink{Kind: "file", Path: filepath.Join(b.TempDir(), "audit.log")}
	}})
	e.mustHub(oapi.HubCreate{Name: "main", Kind: oapi.Iothub, Hostname: hubHost})
	assertions := e.stormDevices(b, b.N)
	b.ReportAllocs()
	b.ResetTimer()
	for _, a := range assertions {
		req := httptest.NewRequest(http.MethodGet, "/token", nil)
		req.Header.Set("Authorization", "Bearer "+a)
		rec := httptest.NewRecorder()
		done := make(chan struct{})
		go func() {
			defer close(done)
			e.handler.ServeHTTP(rec, req)
		}()
		<-done
		if rec.Code != http.StatusOK {
			b.Fatalf("got %d %s", rec.Code, rec.Body)
		}
	}
}

// stormDevices imports n ES256 devices on hub main in one NDJSON import and returns
// one signed assertion of each.
func (e *env) stormDevices(b *testing.B, n int) []string {
	var body strings.Builder
	keys := make([]*ecdsa.PrivateKey, n)
	for i := range keys {
		var pub string
		keys[i], pub = mustECKey(b)
		line, _ := json.Marshal(map[string]any{"deviceId": "storm-" + strconv.Itoa(i), "hub": "main",
			"auth": map[string]string{"type": "es256", "publicKey": pub}})
		body.Write(append(line, '\n'))
	}
	lines := e.mustImport("application/x-ndjson", body.String())
	if got := lines[len(lines)-1].Summary; got == nil || got.Created != n {
		b.Fatalf("import: got summary %+v, want %d created", got, n)
	}
	assertions := make([]string, n)
	for i, k := range keys {
		assertions[i] = mustSign(b, jwt.SigningMethodES256, e.claims("storm-"+strconv.Itoa(i)), k)
	}
	return assertions
}
