package main

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/tokensvc/tokensvc/internal/apptest"
	"github.com/tokensvc/tokensvc/internal/redistest"
	"github.com/tokensvc/tokensvc/internal/vaulttest"
)

// backendHeader names the replica (1-based) that answered through roundRobin.
const backendHeader = "X-Test-Replica"

// roundRobin is a loopback reverse proxy that sends each request to the next replica in
// turn, as a Kubernetes Service without session affinity may, and says which answered.
type roundRobin struct {
	mu       sync.Mutex
	backends []*url.URL
	next     int
	srv      *httptest.Server
}

func newRoundRobin(t *testing.T, urls ...string) *roundRobin {
	t.Helper()
	rr := &roundRobin{}
	rr.set(t, urls...)
	rp := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			rr.mu.Lock()
			i := rr.next % len(rr.backends)
			rr.next++
			b := rr.backends[i]
			rr.mu.Unlock()
			r.SetURL(b)
			r.Out.Header.Set(backendHeader, strconv.Itoa(i+1))
		},
		ModifyResponse: func(resp *http.Response) error {
			resp.Header.Set(backendHeader, resp.Request.Header.Get(backendHeader))
			return nil
		},
	}
	rr.srv = httptest.NewServer(rp)
	t.Cleanup(rr.srv.Close)
	return rr
}

// set replaces the replicas; the next request goes to the first.
func (rr *roundRobin) set(t *testing.T, urls ...string) {
	t.Helper()
	rr.mu.Lock()
	defer rr.mu.Unlock()
	rr.backends = rr.backends[:0]
	for _, u := range urls {
		p, err := url.Parse(u)
		if err != nil {
			t.Fatal(err)
		}
		rr.backends = append(rr.backends, p)
	}
	rr.next = 0
}

// reply is one answer through the proxy.
type reply struct {
	replica    int
	status     int
	retryAfter string
	body       []byte
}

func (rr *roundRobin) do(t *testing.T, method, path, bearer string) reply {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, rr.srv.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	n, _ := strconv.Atoi(resp.Header.Get(backendHeader))
	return reply{replica: n, status: resp.StatusCode, retryAfter: resp.Header.Get("Retry-After"), body: b}
}

// nonce asks the next replica for a nonce.
func (rr *roundRobin) nonce(t *testing.T) (string, int) {
	t.Helper()
	r := rr.do(t, http.MethodPost, "/token/nonce", "")
	var n struct{ Nonce string }
	if r.status != http.StatusOK || json.Unmarshal(r.body, &n) != nil || n.Nonce == "" {
		t.Fatalf("POST /token/nonce on replica %d: got %d %s", r.replica, r.status, r.body)
	}
	return n.Nonce, r.replica
}

func nonceAssertionFor(t *testing.T, id, secret, nonce string) string {
	t.Helper()
	a, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
		"iss": id, "sub": id, "aud": "tokensvc", "nonce": nonce,
		"iat": 946684800, "exp": 946684860, // a clockless board's idea of the time
	}).SignedString([]byte(secret))
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// want checks which replica answered with which status.
func (r reply) want(t *testing.T, what string, replica, status int) {
	t.Helper()
	if r.replica != replica || r.status != status {
		t.Errorf("%s: replica %d answered %d %s, want replica %d answering %d", what, r.replica, r.status, r.body, replica, status)
	}
}

// replicaCluster is three tokensvc replicas on one real Vault behind the proxy, with
// the shared replay store when redis is set.
type replicaCluster struct {
	env      map[string]string
	replicas []*instance
	proxy    *roundRobin
	secret   string
}

const replicasAdmin = "replicas-admin-token-0123456789"

func startCluster(t *testing.T, v *vaulttest.Server, redis *redistest.Server, extra map[string]string) *replicaCluster {
	t.Helper()
	env := vaultEnv(t, v, replicasAdmin)
	env["TOKENSVC_DEVICE_RATE"] = "0" // per-replica budgets are not what this test is about
	env["TOKENSVC_AUDIT"] = "off"
	if redis != nil {
		env["TOKENSVC_REPLAY_STORE"] = redis.URL()
		env["TOKENSVC_REPLAY_STORE_PASSWORD"] = redis.Password
	}
	maps.Copy(env, extra)
	c := &replicaCluster{env: env}
	var urls []string
	for range 3 {
		in := mustStart(t, maps.Clone(env))
		c.replicas = append(c.replicas, in)
		urls = append(urls, in.url)
	}
	c.proxy = newRoundRobin(t, urls...)
	admin := client(t, c.proxy.srv.URL, replicasAdmin)
	apptest.PostHub(t, admin, mainHub)
	c.secret = *apptest.PostDevice(t, admin, hs256("d1", "main")).Auth.Secret
	c.proxy.set(t, urls...)
	return c
}

// restart stops replica i (1-based) cleanly and starts a new process in its place.
func (c *replicaCluster) restart(t *testing.T, i int) {
	t.Helper()
	c.replicas[i-1].stop(t)
	c.replicas[i-1] = mustStart(t, maps.Clone(c.env))
	var urls []string
	for _, in := range c.replicas {
		urls = append(urls, in.url)
	}
	c.proxy.set(t, urls...)
}

// TestReplicasSharedReplayStore is issue 15's deployment with the shared replay store:
// three replicas on one Vault and one redis-server behind a round-robin proxy. A nonce
// any replica issued is good on another, once; an assertion is good once across all;
// with the replay store dead, GET /token is a 503 with Retry-After on every replica
// (fail closed) and /readyz says why, and service returns within 30 s of the store's
// return with every used value still used; a restarted replica loses no protection.
func TestReplicasSharedReplayStore(t *testing.T) {
	v := vaulttest.Start(t)
	redis := redistest.Start(t)
	c := startCluster(t, v, redis, nil)
	rr := c.proxy

	n, from := rr.nonce(t)
	if from != 1 {
		t.Fatalf("the nonce came from replica %d, want 1", from)
	}
	na := nonceAssertionFor(t, "d1", c.secret, n)
	rr.do(t, http.MethodGet, "/token", na).want(t, "the nonce on another replica", 2, http.StatusOK)
	rr.do(t, http.MethodGet, "/token", na).want(t, "the same nonce on a third replica", 3, http.StatusUnauthorized)
	rr.do(t, http.MethodGet, "/token", na).want(t, "the same nonce on the replica that issued it", 1, http.StatusUnauthorized)

	a := assertionFor(t, "d1", c.secret, "jti-shared-1")
	rr.do(t, http.MethodGet, "/token", a).want(t, "an assertion, first use", 2, http.StatusOK)
	rr.do(t, http.MethodGet, "/token", a).want(t, "the assertion replayed on replica 3", 3, http.StatusUnauthorized)
	rr.do(t, http.MethodGet, "/token", a).want(t, "the assertion replayed on replica 1", 1, http.StatusUnauthorized)
	rr.do(t, http.MethodGet, "/token", a).want(t, "the assertion replayed on replica 2", 2, http.StatusUnauthorized)

	// Exactly one replay store command per token, fresh or replayed.
	redis.ResetStats(t)
	for i := range 6 {
		rr.do(t, http.MethodGet, "/token", assertionFor(t, "d1", c.secret, "count-"+strconv.Itoa(i/2)))
	}
	if calls := redis.Calls(t); calls["set"] != 6 {
		t.Errorf("replay store commands for 6 token requests: got %v, want 6 SETs", calls)
	}

	// The replay store dies: every replica refuses, fast, with Retry-After.
	redis.Kill()
	rr.set(t, c.replicas[0].url, c.replicas[1].url, c.replicas[2].url)
	for i := 1; i <= 3; i++ {
		start := time.Now()
		r := rr.do(t, http.MethodGet, "/token", assertionFor(t, "d1", c.secret, fmt.Sprintf("down-%d", i)))
		r.want(t, "GET /token with the replay store down", i, http.StatusServiceUnavailable)
		if r.retryAfter == "" {
			t.Errorf("replica %d: 503 without Retry-After", i)
		}
		// A bound on behaviour, not speed: the call deadline is 250 ms, and a client
		// that retried or dialled with go-redis's defaults (5 s) would stall for seconds.
		if d := time.Since(start); d > 4*time.Second {
			t.Errorf("replica %d: the 503 took %v; want it within the call deadline (250 ms), not a stall", i, d)
		}
	}
	r := rr.do(t, http.MethodGet, "/readyz", "")
	var ready struct{ Status, Detail string }
	if json.Unmarshal(r.body, &ready) != nil || ready.Status != "degraded" || ready.Detail == "" {
		t.Errorf("/readyz with the replay store down: got %d %s, want 200 degraded naming the replay store", r.status, r.body)
	}
	// Nonces need no replay store to be issued.
	rr.nonce(t)

	redis.Restart(t)
	back := time.Now()
	for i := 0; ; i++ {
		r := rr.do(t, http.MethodGet, "/token", assertionFor(t, "d1", c.secret, fmt.Sprintf("back-%d", i)))
		if r.status == http.StatusOK {
			break
		}
		if time.Since(back) > 30*time.Second {
			t.Fatalf("not recovered 30 s after the replay store returned: replica %d answered %d %s", r.replica, r.status, r.body)
		}
		time.Sleep(200 * time.Millisecond)
	}
	// Every replica is back, and what was used before the outage is still used.
	for range 3 {
		if r := rr.do(t, http.MethodGet, "/token", a); r.status != http.StatusUnauthorized {
			t.Errorf("the assertion used before the outage, on replica %d after it: got %d, want 401", r.replica, r.status)
		}
	}

	// A restarted replica loses no protection: what was used stays used on it.
	c.restart(t, 2)
	rr.do(t, http.MethodGet, "/token", a).want(t, "the used assertion on replica 1", 1, http.StatusUnauthorized)
	rr.do(t, http.MethodGet, "/token", a).want(t, "the used assertion on the restarted replica 2", 2, http.StatusUnauthorized)
	rr.do(t, http.MethodGet, "/token", na).want(t, "the used nonce on replica 3", 3, http.StatusUnauthorized)
	rr.do(t, http.MethodGet, "/token", na).want(t, "the used nonce on replica 1", 1, http.StatusUnauthorized)
	rr.do(t, http.MethodGet, "/token", na).want(t, "the used nonce on the restarted replica 2", 2, http.StatusUnauthorized)
	n2, _ := rr.nonce(t) // from replica 3
	rr.do(t, http.MethodGet, "/token", nonceAssertionFor(t, "d1", c.secret, n2)).want(t, "a new nonce on replica 1", 1, http.StatusOK)

	for i, in := range c.replicas {
		if logs := in.stderr.String() + in.stdout.String(); strings.Contains(logs, redis.Password) {
			t.Errorf("replica %d logged the replay store's password", i+1)
		}
	}
}

// TestReplicasPerReplicaMemory states what several replicas allow WITHOUT the shared
// replay store (README, security model): nonces still work on any replica, but a
// nonce or an assertion is good once PER REPLICA — a captured one can be replayed on
// each other replica within its lifetime — while one replica never accepts it twice.
func TestReplicasPerReplicaMemory(t *testing.T) {
	v := vaulttest.Start(t)
	c := startCluster(t, v, nil, nil)
	rr := c.proxy

	n, _ := rr.nonce(t) // replica 1
	na := nonceAssertionFor(t, "d1", c.secret, n)
	rr.do(t, http.MethodGet, "/token", na).want(t, "the nonce on replica 2", 2, http.StatusOK)
	rr.do(t, http.MethodGet, "/token", na).want(t, "the nonce replayed on replica 3 (allowed without the shared store)", 3, http.StatusOK)
	rr.do(t, http.MethodGet, "/token", na).want(t, "the nonce replayed on replica 1 (allowed without the shared store)", 1, http.StatusOK)
	rr.do(t, http.MethodGet, "/token", na).want(t, "the nonce a second time on replica 2", 2, http.StatusUnauthorized)

	a := assertionFor(t, "d1", c.secret, "jti-memory-1")
	for i := 3; i <= 5; i++ {
		rr.do(t, http.MethodGet, "/token", a).want(t, "the assertion, once per replica", (i-1)%3+1, http.StatusOK)
	}
	for i := 6; i <= 8; i++ {
		rr.do(t, http.MethodGet, "/token", a).want(t, "the assertion a second time on one replica", (i-1)%3+1, http.StatusUnauthorized)
	}
	// And a replica restarted with the Vault store forgets (nothing is saved): the
	// assertion is good once more there.
	c.restart(t, 1)
	rr.do(t, http.MethodGet, "/token", a).want(t, "the assertion on the restarted replica 1 (allowed without the shared store)", 1, http.StatusOK)
}

// TestReplicasSharedDeviceLimits: with TOKENSVC_REPLAY_STORE_DEVICE_LIMITS a device's
// budget (burst 2 here) is one across the replicas, not one per replica.
func TestReplicasSharedDeviceLimits(t *testing.T) {
	v := vaulttest.Start(t)
	redis := redistest.Start(t)
	c := startCluster(t, v, redis, map[string]string{
		"TOKENSVC_DEVICE_RATE": "0.01", "TOKENSVC_DEVICE_BURST": "2", "TOKENSVC_REPLAY_STORE_DEVICE_LIMITS": "true",
	})
	rr := c.proxy
	rr.do(t, http.MethodGet, "/token", assertionFor(t, "d1", c.secret, "lim-1")).want(t, "1st token", 1, http.StatusOK)
	rr.do(t, http.MethodGet, "/token", assertionFor(t, "d1", c.secret, "lim-2")).want(t, "2nd token", 2, http.StatusOK)
	r := rr.do(t, http.MethodGet, "/token", assertionFor(t, "d1", c.secret, "lim-3"))
	r.want(t, "3rd token, on a replica that has not served the device yet", 3, http.StatusTooManyRequests)
	if r.retryAfter == "" {
		t.Error("429 without Retry-After")
	}
}
