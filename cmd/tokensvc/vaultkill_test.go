package main

import (
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	vault "github.com/hashicorp/vault/api"

	"github.com/tokensvc/tokensvc/internal/apptest"
	"github.com/tokensvc/tokensvc/internal/signer"
	"github.com/tokensvc/tokensvc/internal/vaulttest"
)

// Timeline and size of TestVaultKilledUnderLoad.
const (
	killLoadWorkers = 6
	// killPause is each worker's pause between requests: the load stays continuous
	// but leaves the two cores some headroom, so latencies measure the service rather
	// than a run queue the test itself keeps full (with a saturating loop under -race,
	// cached requests, which never touch Vault, were as slow as the slowest 503s).
	killPause       = 5 * time.Millisecond
	killWarmDevices = 8
	killColdDevices = 8
	// killBefore is how long the load runs against a healthy Vault before the kill.
	killBefore = 1500 * time.Millisecond
	// killOutage is how long Vault stays dead before it is started again.
	killOutage = 4 * time.Second
	// killAfter is how long the load goes on once cold devices are served again.
	killAfter = 2 * time.Second
	// killTokenTTL is the service's Vault token lifetime: short enough that the
	// service renews it (about two thirds in) against the restarted Vault while the test
	// runs, long enough that the outage cannot let it expire.
	killTokenTTL = 30 * time.Second

	// bar503Latency is the DESIGN §6 figure for a 503: measured and logged (median,
	// p99, max), and reported in BENCHMARKS.md, but not asserted — the test process
	// shares two noisy cores with the service, and a descheduled test process is not a
	// slow service.
	bar503Latency = 300 * time.Millisecond
	// ceil503 is what the test asserts instead: the refusal comes from one attempt
	// bounded by the 250 ms Vault call deadline, never from a retry chain (the Vault
	// client's retries alone wait ≥ 2 s, plus a deadline per attempt). Time the whole
	// test process stood still during a request is not counted against it.
	ceil503     = 2 * time.Second
	barRecovery = 30 * time.Second
)

// killDevice is a provisioned device and what a load worker needs to use it.
type killDevice struct {
	id, secret string
	key        []byte // primary key, to verify the tokens minted for it
	cold       bool   // never asked for before the kill, so its keys are not cached
}

// killResult is one GET /token of the load.
type killResult struct {
	dev        *killDevice
	start, end time.Time
	status     int
	retryAfter string
	// problem says whether the body was application/problem+json carrying the status.
	problem bool
	// err is a transport error, or why a 200 was not a token that verifies.
	err error
}

// TestVaultKilledUnderLoad checks the DESIGN §6 "Vault down" bar for the outage a
// frozen Vault (TestVaultOutage) does not stage: Vault is KILLED (its port refuses
// connections, then it comes back sealed on the same address and is unsealed) while
// load runs the whole time. Devices whose keys are cached must be served throughout,
// uncached ones refused with 503, Retry-After and a problem+json body (300 ms is measured),
// nothing else may happen, and uncached devices must be served again within 30 s of
// Vault's return. The service runs with its defaults (key cache 60 s, stale-if-error
// 15 min, Vault request timeout 250 ms) except TOKENSVC_DEVICE_RATE=0: the load asks
// for each device's token many times a second, far beyond the default per-device
// limit. Two ways of logging in to Vault are run:
//
//   - a token with a 30 s TTL, which the service renews; the test waits for a renewal
//     by the restarted Vault (tokens live in the file storage and survive the kill);
//   - AppRole with tokens that live 2 s, renewable up to 3 s: the token dies during
//     the outage, the service must log in again once Vault is back, and Vault refusing
//     the dead token meanwhile must not turn into 500s.
//
// The 300 ms figure is measured and logged, not asserted (these machines are shared and
// noisy): the test fails a 503 slower than ceil503, which only a retry in the request
// path produces, and the log says how long the test process stood still during each slow 503.
func TestVaultKilledUnderLoad(t *testing.T) {
	tests := []struct {
		name string
		// auth returns the service's Vault auth settings, and the token whose renewal
		// by the restarted Vault the test waits for ("" to skip that check).
		auth func(t *testing.T, srv *vaulttest.Server) (env map[string]string, renewed string)
	}{
		{"token renewed across the outage", func(t *testing.T, srv *vaulttest.Server) (map[string]string, string) {
			tok := mustPolicyTokenTTL(t, srv, killTokenTTL.String())
			return map[string]string{"VAULT_TOKEN": tok}, tok
		}},
		{"approle token expires during the outage", func(t *testing.T, srv *vaulttest.Server) (map[string]string, string) {
			roleID, secretID := mustPolicyAppRole(t, srv, "2s", "3s")
			return map[string]string{"TOKENSVC_VAULT_AUTH": "approle", "TOKENSVC_VAULT_ROLE_ID": roleID, "TOKENSVC_VAULT_SECRET_ID": secretID}, ""
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := vaulttest.StartPersistent(t)
			env, renewed := tt.auth(t, srv)
			testVaultKilledUnderLoad(t, srv, env, renewed)
		})
	}
}

// mustPolicyAppRole enables AppRole with a role whose tokens hold the least-privilege
// policy, live ttl and renew up to maxTTL, and returns its role ID and a secret ID.
func mustPolicyAppRole(t *testing.T, srv *vaulttest.Server, ttl, maxTTL string) (roleID, secretID string) {
	t.Helper()
	mustPolicyToken(t, srv) // installs the policy
	root := srv.Client(t)
	ctx := t.Context()
	if err := root.Sys().EnableAuthWithOptionsWithContext(ctx, "approle", &vault.EnableAuthOptions{Type: "approle"}); err != nil {
		t.Fatal(err)
	}
	if _, err := root.Logical().WriteWithContext(ctx, "auth/approle/role/tokensvc", map[string]any{
		"token_policies": "tokensvc", "token_ttl": ttl, "token_max_ttl": maxTTL, "token_no_default_policy": true,
	}); err != nil {
		t.Fatal(err)
	}
	r, err := root.Logical().ReadWithContext(ctx, "auth/approle/role/tokensvc/role-id")
	if err != nil {
		t.Fatal(err)
	}
	s, err := root.Logical().WriteWithContext(ctx, "auth/approle/role/tokensvc/secret-id", nil)
	if err != nil {
		t.Fatal(err)
	}
	return r.Data["role_id"].(string), s.Data["secret_id"].(string)
}

func testVaultKilledUnderLoad(t *testing.T, srv *vaulttest.Server, authEnv map[string]string, vaultToken string) {
	const admin = "vault-kill-admin-token-0123"
	env := map[string]string{
		"TOKENSVC_STORE":       "vault",
		"VAULT_ADDR":           srv.Addr,
		"TOKENSVC_ADMIN_TOKEN": admin,
		"TOKENSVC_AUDIENCE":    "tokensvc",
		"TOKENSVC_DEVICE_RATE": "0",
	}
	maps.Copy(env, authEnv)
	in := mustStart(t, env)
	c := client(t, in.url, admin)
	apptest.PostHub(t, c, mainHub)
	var warm, cold []*killDevice
	for i := range killWarmDevices + killColdDevices {
		id := "kill-" + strconv.Itoa(i)
		dev := apptest.PostDevice(t, c, hs256(id, "main"))
		key, err := signer.DecodeKey(*dev.PrimaryKey, signer.KeyBase64)
		if err != nil {
			t.Fatal(err)
		}
		d := &killDevice{id: id, secret: *dev.Auth.Secret, key: key, cold: i >= killWarmDevices}
		if d.cold {
			cold = append(cold, d)
		} else {
			warm = append(warm, d)
		}
	}

	httpc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: killLoadWorkers}}
	t.Cleanup(httpc.CloseIdleConnections)
	get := func(d *killDevice, jti string) killResult {
		return fetchToken(httpc, in.url, d, jti)
	}
	// Warm-up: one token each caches the warm devices' records and the hub.
	for _, d := range warm {
		if r := get(d, "warmup-"+d.id); r.status != 200 || r.err != nil {
			t.Fatalf("warm-up %s: got %d %v", d.id, r.status, r.err)
		}
	}

	// The load: every worker asks in turn for a warm device's token and, once Vault
	// has been killed, a cold device's; each request carries a fresh assertion and
	// reuses a kept-alive connection.
	var (
		coldOn      atomic.Bool  // set once Vault is dead: cold devices stay uncached before
		recoveredAt atomic.Int64 // end of the first cold 200, Unix ns
		stop        = make(chan struct{})
		wg          sync.WaitGroup
		results     = make([][]killResult, killLoadWorkers)
	)
	for w := range killLoadWorkers {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				case <-time.After(killPause):
				}
				d := warm[(w+i)%len(warm)]
				if i%2 == 1 && coldOn.Load() {
					d = cold[(w+i/2)%len(cold)]
				}
				r := get(d, fmt.Sprintf("load-%d-%d", w, i))
				if d.cold && r.status == 200 && r.err == nil {
					recoveredAt.CompareAndSwap(0, r.end.UnixNano())
				}
				results[w] = append(results[w], r)
			}
		})
	}
	stalls := watchStalls(stop, &wg)
	stopLoad := sync.OnceFunc(func() { close(stop); wg.Wait() })
	t.Cleanup(stopLoad)

	time.Sleep(killBefore)
	srv.Kill()
	killedAt := time.Now()
	coldOn.Store(true)
	time.Sleep(killOutage / 2)
	if got := readiness(t, in.url); got != "degraded" {
		t.Errorf("readyz while Vault is dead: got %q, want degraded", got)
	}
	time.Sleep(time.Until(killedAt.Add(killOutage)))

	restartAt := time.Now()
	srv.Restart(t) // returns once Vault is unsealed, active and its KV mount answers
	backAt := time.Now()
	for recoveredAt.Load() == 0 && time.Since(backAt) < barRecovery {
		time.Sleep(10 * time.Millisecond)
	}
	recovered := recoveredAt.Load() != 0
	if recovered {
		time.Sleep(killAfter)
	}

	// The service renews its token against the restarted Vault: the renewal due about
	// 20 s after the service started lands after the restart (one due during the
	// outage is retried), and the token is still valid.
	if vaultToken != "" {
		lastRenewal, ttl, err := waitRenewal(t, srv, vaultToken, killedAt, backAt.Add(killTokenTTL))
		if err != nil {
			t.Errorf("service token after the restart: %v", err)
		} else {
			t.Logf("service token renewed by the restarted Vault %v after it was back; TTL left %v", lastRenewal.Sub(backAt).Round(time.Second), ttl)
		}
	}
	stopLoad()
	end := time.Now()

	if got := readiness(t, in.url); got != "ok" {
		t.Errorf("readyz after recovery: got %q, want ok", got)
	}

	var all []killResult
	for _, rs := range results {
		all = append(all, rs...)
	}
	if !recovered {
		t.Fatalf("cold devices not served within %v of Vault's return (%d requests)", barRecovery, len(all))
	}
	recoveredTime := time.Unix(0, recoveredAt.Load())
	report := checkKillResults(t, all, killedAt, restartAt, recoveredTime, cold, stalls)
	t.Logf("load: %d requests in %v by %d workers (%d warm, %d cold devices); Vault killed %v after the load began, dead for %v, restart to unsealed %v",
		len(all), end.Sub(killedAt.Add(-killBefore)).Round(time.Millisecond), killLoadWorkers, len(warm), len(cold),
		killBefore, restartAt.Sub(killedAt).Round(time.Millisecond), backAt.Sub(restartAt).Round(time.Millisecond))
	t.Logf("warm devices while Vault was down: %d/%d served (%.1f %%); warm overall %d/%d",
		report.warmOutageOK, report.warmOutage, pct(report.warmOutageOK, report.warmOutage), report.warmOK, report.warm)
	t.Logf("cold devices while Vault was down: %d requests, %d got 503 + Retry-After + problem+json; all 503s: median %v, p99 %v, max %v (bar %v)",
		report.coldOutage, report.coldOutage503, report.median, report.p99, report.max, bar503Latency)
	t.Logf("recovery: first cold device served %v after Vault was back (unsealed), %v after its restart began (bar %v); %d cold 503s and %d cold 200s in between; %d cold requests after recovery, all 200: %t",
		recoveredTime.Sub(backAt).Round(time.Millisecond), recoveredTime.Sub(restartAt).Round(time.Millisecond), barRecovery,
		report.coldRecovering503, report.coldRecovering200, report.coldAfter, report.coldAfterOK == report.coldAfter)
	for _, r := range report.slowest {
		// Diagnosis, not a verdict: a cached device's request never touches Vault, and
		// the stall monitor is an idle goroutine; if they were as slow, the whole process
		// stood still (the machine's other load, or GC) rather than the 503 path.
		var warmMax time.Duration
		for _, o := range all {
			if !o.dev.cold && o.start.Before(r.end) && o.end.After(r.start) {
				warmMax = max(warmMax, o.end.Sub(o.start))
			}
		}
		t.Logf("slow 503: %s took %v, started %v after the kill (restart began at +%v, Vault back at +%v); meanwhile the slowest cached request took %v and the process stood still for %v",
			r.dev.id, r.end.Sub(r.start).Round(time.Millisecond), r.start.Sub(killedAt).Round(time.Millisecond),
			restartAt.Sub(killedAt).Round(time.Millisecond), backAt.Sub(killedAt).Round(time.Millisecond),
			warmMax.Round(time.Millisecond), stalls.within(r.start, r.end).Round(time.Millisecond))
	}
	log := in.stderr.String()
	t.Logf("service's Vault auth: %d logins, %d failed login attempts, %d renewal ends; %d 503s from Vault refusing the token while the service was not logged in",
		strings.Count(log, `"msg":"vault login"`), strings.Count(log, `"msg":"vault login failed"`), strings.Count(log, `"msg":"vault token renewal ended"`),
		strings.Count(log, "while the store is not logged in"))
	t.Logf("longest stall of the test process: %v; load average %s", stalls.longest().Round(time.Millisecond), loadAverage())
	if d := recoveredTime.Sub(backAt); d > barRecovery {
		t.Errorf("recovery took %v after Vault was back, want at most %v", d, barRecovery)
	}
}

// fetchToken asks for d's token with a fresh assertion and records the outcome; a 200
// counts only if its token verifies with d's key. It runs on load goroutines, so it
// reports through the result, never through t.
func fetchToken(c *http.Client, url string, d *killDevice, jti string) killResult {
	r := killResult{dev: d, start: time.Now()}
	a, err := signAssertion(d.id, d.secret, jti, r.start)
	if err != nil {
		r.err = err
		return r
	}
	req, err := http.NewRequest(http.MethodGet, url+"/token", nil)
	if err != nil {
		r.err = err
		return r
	}
	req.Header.Set("Authorization", "Bearer "+a)
	resp, err := c.Do(req)
	if err != nil {
		r.err, r.end = err, time.Now()
		return r
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	r.end = time.Now()
	r.status, r.retryAfter = resp.StatusCode, resp.Header.Get("Retry-After")
	if err != nil {
		r.err = fmt.Errorf("read body: %w", err)
		return r
	}
	switch {
	case resp.StatusCode == http.StatusOK:
		var tok struct{ Token string }
		if err := json.Unmarshal(body, &tok); err != nil {
			r.err = fmt.Errorf("decode token response: %w", err)
		} else if _, err := signer.Verify(tok.Token, d.key, r.end); err != nil {
			r.err = fmt.Errorf("token does not verify: %w", err)
		}
	case strings.HasPrefix(resp.Header.Get("Content-Type"), "application/problem+json"):
		var p struct{ Status int }
		r.problem = json.Unmarshal(body, &p) == nil && p.Status == resp.StatusCode
	}
	return r
}

// signAssertion is assertionFor without a *testing.T, for the load goroutines.
func signAssertion(id, secret, jti string, now time.Time) (string, error) {
	a, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
		"iss": id, "sub": id, "aud": "tokensvc", "iat": now.Unix(), "exp": now.Add(time.Minute).Unix(), "jti": jti,
	}).SignedString([]byte(secret))
	if err != nil {
		return "", fmt.Errorf("sign assertion: %w", err)
	}
	return a, nil
}

// waitRenewal waits until Vault records a renewal of token after 'after', and returns
// it with the token's TTL left; it gives up at deadline.
func waitRenewal(t *testing.T, srv *vaulttest.Server, token string, after, deadline time.Time) (time.Time, time.Duration, error) {
	t.Helper()
	root := srv.Client(t)
	var last error
	for {
		s, err := root.Auth().Token().LookupWithContext(t.Context(), token)
		if err == nil {
			last = fmt.Errorf("last renewal at %v, none after the kill at %v", s.Data["last_renewal_time"], after.Unix())
			if n, ok := s.Data["last_renewal_time"].(json.Number); ok {
				if sec, err := n.Int64(); err == nil && sec > after.Unix() {
					ttl, err := s.TokenTTL()
					return time.Unix(sec, 0), ttl, err
				}
			}
		} else {
			last = fmt.Errorf("look up the service's token: %w", err)
		}
		if time.Now().After(deadline) {
			return time.Time{}, 0, last
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// killReport is what checkKillResults counted.
type killReport struct {
	warm, warmOK, warmOutage, warmOutageOK int
	coldOutage, coldOutage503              int
	coldRecovering503, coldRecovering200   int
	coldAfter, coldAfterOK                 int
	median, p99, max                       time.Duration
	// slowest are the slowest 503s, for telling a stall of the service from
	// scheduling noise by when they happened.
	slowest []killResult
}

// checkKillResults holds every request of the load to the bar and counts them. Vault
// was dead from killedAt and sealed from restartAt until Restart returned; cold
// devices were first served at recoveredAt.
//
//   - Warm devices: 200 with a verifying token, always.
//   - Cold devices started before the restart: 503 with Retry-After and problem+json.
//   - Cold devices started from the restart until recoveredAt: that 503, or a 200.
//   - Cold devices started after recoveredAt: 200, and every cold device served.
//   - Every 503 within ceil503 of the time the test process ran; no transport error,
//     no other status, ever.
func checkKillResults(t *testing.T, all []killResult, killedAt, restartAt, recoveredAt time.Time, cold []*killDevice, stalls *stallLog) killReport {
	t.Helper()
	var (
		rep         killReport
		refused     []killResult
		servedAgain = map[string]bool{}
		failures    int
	)
	fail := func(r killResult, format string, args ...any) {
		failures++
		if failures <= 10 { // the first few say what is wrong; the count says how often
			t.Errorf("%s at +%v (took %v): %s", r.dev.id, r.start.Sub(killedAt).Round(time.Millisecond), r.end.Sub(r.start).Round(time.Millisecond), fmt.Sprintf(format, args...))
		}
	}
	good503 := func(r killResult) bool {
		return r.status == http.StatusServiceUnavailable && r.retryAfter != "" && r.problem
	}
	for _, r := range all {
		took := r.end.Sub(r.start)
		if r.err != nil {
			fail(r, "status %d: %v", r.status, r.err)
			continue
		}
		if r.status == http.StatusServiceUnavailable {
			refused = append(refused, r)
			// Time the whole test process stood still (the machine's other load) is not
			// the service's: a retry chain shows as seconds of time while it ran.
			if stalled := stalls.within(r.start, r.end); took-stalled > ceil503 {
				fail(r, "503 took %v, want at most %v: a retry in the request path? (the test process stood still for %v of it)", took, ceil503, stalled.Round(time.Millisecond))
			}
		}
		outage := !r.start.Before(killedAt) && r.start.Before(restartAt)
		switch {
		case !r.dev.cold:
			rep.warm++
			if outage {
				rep.warmOutage++
			}
			if r.status != http.StatusOK {
				fail(r, "cached device got %d, want 200", r.status)
				continue
			}
			rep.warmOK++
			if outage {
				rep.warmOutageOK++
			}
		case r.start.Before(killedAt):
			fail(r, "cold device asked for before the kill")
		case outage:
			rep.coldOutage++
			if !good503(r) {
				fail(r, "uncached device while Vault is dead: got %d (Retry-After %q, problem+json %t), want 503 with Retry-After and problem+json", r.status, r.retryAfter, r.problem)
				continue
			}
			rep.coldOutage503++
		case r.start.Before(recoveredAt):
			switch {
			case r.status == http.StatusOK:
				rep.coldRecovering200++
			case good503(r):
				rep.coldRecovering503++
			default:
				fail(r, "uncached device while Vault comes back: got %d (Retry-After %q, problem+json %t), want 200, or 503 with Retry-After and problem+json", r.status, r.retryAfter, r.problem)
			}
		default:
			rep.coldAfter++
			if r.status != http.StatusOK {
				fail(r, "cold device after recovery: got %d, want 200", r.status)
				continue
			}
			rep.coldAfterOK++
			servedAgain[r.dev.id] = true
		}
	}
	if failures > 10 {
		t.Errorf("... %d failures in all", failures)
	}
	if rep.warmOutage == 0 || rep.coldOutage == 0 || rep.coldAfter == 0 {
		t.Errorf("the load missed a phase: %d warm requests during the outage, %d cold, %d cold after recovery", rep.warmOutage, rep.coldOutage, rep.coldAfter)
	}
	for _, d := range cold {
		if !servedAgain[d.id] {
			t.Errorf("cold device %s never served after recovery", d.id)
		}
	}
	if len(refused) > 0 {
		took := func(r killResult) time.Duration { return r.end.Sub(r.start) }
		slices.SortFunc(refused, func(a, b killResult) int { return cmp.Compare(took(a), took(b)) })
		rep.median = took(refused[len(refused)/2])
		rep.p99 = took(refused[len(refused)*99/100])
		rep.max = took(refused[len(refused)-1])
		rep.slowest = slices.Clone(refused[max(len(refused)-3, 0):])
		slices.Reverse(rep.slowest)
	}
	return rep
}

// stallLog records when an idle goroutine could not run on time: the whole test
// process standing still (the machine's other load, or a GC pause) rather than the
// service being slow at something.
type stallLog struct {
	mu     sync.Mutex
	stalls [][2]time.Time
}

// stallTick is how often the monitor wakes; a wake-up later than stallMin counts.
const (
	stallTick = 2 * time.Millisecond
	stallMin  = 20 * time.Millisecond
)

// watchStalls runs the stall monitor until stop is closed.
func watchStalls(stop <-chan struct{}, wg *sync.WaitGroup) *stallLog {
	l := &stallLog{}
	wg.Go(func() {
		tick := time.NewTicker(stallTick)
		defer tick.Stop()
		last := time.Now()
		for {
			select {
			case <-stop:
				return
			case now := <-tick.C:
				if now.Sub(last) > stallMin {
					l.mu.Lock()
					l.stalls = append(l.stalls, [2]time.Time{last, now})
					l.mu.Unlock()
				}
				last = now
			}
		}
	})
	return l
}

// within returns how long the process stood still between from and to.
func (l *stallLog) within(from, to time.Time) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	var d time.Duration
	for _, s := range l.stalls {
		lo, hi := later(s[0], from), earlier(s[1], to)
		if hi.After(lo) {
			d += hi.Sub(lo)
		}
	}
	return d
}

func (l *stallLog) longest() time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	var d time.Duration
	for _, s := range l.stalls {
		d = max(d, s[1].Sub(s[0]))
	}
	return d
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func earlier(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// loadAverage is the machine's 1, 5 and 15 minute load averages, where /proc has them.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ") + fmt.Sprintf(" on %d CPUs", runtime.NumCPU())
}

func pct(n, of int) float64 {
	if of == 0 {
		return 0
	}
	return 100 * float64(n) / float64(of)
}
