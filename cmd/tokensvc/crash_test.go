package main

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	vault "github.com/hashicorp/vault/api"

	"github.com/tokensvc/tokensvc/internal/domain"
	"github.com/tokensvc/tokensvc/internal/signer"
	"github.com/tokensvc/tokensvc/internal/testca"
	"github.com/tokensvc/tokensvc/internal/vaulttest"
)

// The reliability bar: kill -9 during a bulk import and during provisioning, and after
// the restart nothing accepted is lost and nothing is half-written, on the embedded
// store and on Vault. The service runs as a real child process; only it is killed
// (the data directory, or the Vault dev server, carries on).

// Hubs every round provisions onto; crashPolicyKey signs for the policy hub.
const (
	crashHubKeys    = "crash-keys"
	crashHubPolicy  = "crash-policy"
	crashHubTransit = "crash-transit" // Vault only: device keys imported into Transit
	crashHubAbsent  = "crash-absent"  // never created: lines naming it are rejected
	crashPolicyKey  = "XxZwqYIbxymF12RefbsHeAtOtNn7nZeUZKUrK4A6+wM="
	crashPolicyName = "device"
)

// crashBackend is one store under test, shared by every round of both scenarios.
type crashBackend struct {
	name    string
	env     []string
	dataDir string        // embedded
	vault   *vault.Client // vault, with the root token
	// groups counts the group markers (vaultstore: one marker naming the devices of
	// concurrent creates on a hub) the import rounds left, to show they were exercised.
	groups int
}

// groupMarkers reads vaultstore's markers straight from Vault and returns how many
// group markers (hubdevices/{hex(hub)}/g…) name devices whose IDs start with prefix,
// and how many such names they hold. Whether each name is a live device or an orphan
// entry is Check's to say (inspectStore); this only counts.
func (b *crashBackend) groupMarkers(t *testing.T, prefix string) (groups, names int) {
	t.Helper()
	const kv = "secret/metadata/tokensvc/hubdevices/"
	keys := func(path string) []string {
		sec, err := b.vault.Logical().List(path)
		if err != nil {
			t.Fatalf("list %s: %v", path, err)
		}
		var out []string
		if sec != nil {
			for _, k := range sec.Data["keys"].([]any) {
				out = append(out, k.(string))
			}
		}
		return out
	}
	for _, hub := range keys(kv) {
		for _, m := range keys(kv + hub) {
			if !strings.HasPrefix(m, "g") {
				continue // a single marker: hex of the device ID
			}
			sec, err := b.vault.Logical().Read("secret/data/tokensvc/hubdevices/" + hub + m)
			if err != nil || sec == nil {
				continue // emptied since the LIST
			}
			data, _ := sec.Data["data"].(map[string]any)
			ids, _ := data["devices"].([]any)
			mine := 0
			for _, id := range ids {
				if s, _ := id.(string); strings.HasPrefix(s, prefix) {
					mine++
				}
			}
			if mine > 0 {
				groups++
				names += mine
			}
		}
	}
	return groups, names
}

// inspect checks and reads what the store holds while the service is down.
func (b *crashBackend) inspect(t *testing.T) *inspection {
	t.Helper()
	if b.vault != nil {
		return inspectStore(t, openVaultStore(t, b.vault))
	}
	return inspectStore(t, openFileStoreCopy(t, b.dataDir))
}

func (b *crashBackend) transit() bool { return b.vault != nil }

// ageClaim makes the claim a kill left on a device or hub look expired (Vault only).
func (b *crashBackend) ageClaim(ctx context.Context, kind, name string) error {
	return ageClaim(ctx, b.vault, kind, name)
}

// TestKillNineDuringWrites is the crash bar as a table: stores × scenarios × kill points.
func TestKillNineDuringWrites(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and repeatedly kills the real binary")
	}
	bin := buildTokensvc(t)
	backends := []struct {
		name string
		open func(t *testing.T) *crashBackend
	}{
		{"embedded", func(t *testing.T) *crashBackend {
			dir := t.TempDir()
			return &crashBackend{name: "embedded", env: []string{"TOKENSVC_DATA_DIR=" + dir}, dataDir: dir}
		}},
		{"vault", func(t *testing.T) *crashBackend {
			srv := vaulttest.Start(t) // skips without TOKENSVC_VAULT_BIN, fails in CI
			return &crashBackend{
				name: "vault",
				// The per-call deadline is raised from 250 ms: on a shared two-core machine
				// a Vault read now and then takes longer, which stops an import (a store
				// outage, by design) and has nothing to do with what a kill leaves behind.
				env:   []string{"TOKENSVC_STORE=vault", "VAULT_ADDR=" + srv.Addr, "VAULT_TOKEN=" + mustPolicyToken(t, srv), "TOKENSVC_VAULT_TIMEOUT=2s"},
				vault: srv.Client(t),
			}
		}},
	}
	// Kill points: report lines (import) or 201s (provisioning) seen before SIGKILL; an
	// import's reader may stop reading for a moment first, so the service runs ahead of
	// what the client has seen when it dies.
	importKills := []struct {
		lines int
		pause time.Duration
	}{{1, 0}, {250, 20 * time.Millisecond}, {700, 3 * time.Millisecond}}
	provisionKills := []int{1, 40, 150}
	keys := newCrashKeys(t)
	for _, bt := range backends {
		t.Run(bt.name, func(t *testing.T) {
			be := bt.open(t)
			t.Run("bulk import", func(t *testing.T) {
				for r, k := range importKills {
					t.Run(fmt.Sprintf("kill %v after %d report lines", k.pause, k.lines), func(t *testing.T) {
						importRound(t, bin, be, keys, r, k.lines, k.pause)
					})
				}
				if be.vault != nil && be.groups == 0 {
					t.Errorf("no import round left a group marker: the kills did not cut grouped creates")
				}
			})
			t.Run("provisioning", func(t *testing.T) {
				for r, k := range provisionKills {
					t.Run("kill after "+strconv.Itoa(k)+" created", func(t *testing.T) {
						provisionRound(t, bin, be, keys, r, k)
					})
				}
			})
		})
	}
}

// crashKeys is a small pool of device signing keys (generating thousands would only
// cost time; devices may share a public key).
type crashKeys struct {
	es    []*ecdsa.PrivateKey
	esPEM []string
	ed    []ed25519.PrivateKey
	edPEM []string
}

func newCrashKeys(t *testing.T) *crashKeys {
	k := &crashKeys{}
	for range 4 {
		ek := testca.P256Key(t)
		k.es = append(k.es, ek)
		k.esPEM = append(k.esPEM, testca.PublicKeyPEM(t, &ek.PublicKey))
		_, dk, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		k.ed = append(k.ed, dk)
		k.edPEM = append(k.edPEM, testca.PublicKeyPEM(t, dk.Public()))
	}
	return k
}

// devSpec is one device as an operator sends it, and what the test knows about it.
type devSpec struct {
	id, hub            string
	auth               domain.CredentialType
	pubPEM             string
	signKey            any // the private key of es256/eddsa devices
	fingerprint        string
	primary, secondary string // supplied keys, if any
	modules            []string
	disabled           bool
	maxTTL             int
	invalid            bool // names a hub that does not exist: always rejected
}

// specFor is device i of a mixed fleet: generated HS256 secrets and keys, supplied
// keys, modules, ES256 and EdDSA public keys, pinned certificates, a policy hub,
// disabled devices, token lifetime caps, Transit keys (Vault) and, if invalid is
// allowed, a line that must be rejected.
func specFor(keys *crashKeys, prefix string, i int, transit, allowInvalid bool) devSpec {
	s := devSpec{id: fmt.Sprintf("%s-%05d", prefix, i), hub: crashHubKeys, auth: domain.CredHS256}
	switch i % 10 {
	case 0, 1:
	case 2:
		s.primary, s.secondary = detKey("primary", s.id), detKey("secondary", s.id)
	case 3:
		s.modules = []string{"m1", "m2"}
	case 4:
		s.auth, s.pubPEM, s.signKey = domain.CredES256, keys.esPEM[i%len(keys.es)], keys.es[i%len(keys.es)]
	case 5:
		s.hub, s.auth, s.pubPEM, s.signKey = crashHubPolicy, domain.CredEdDSA, keys.edPEM[i%len(keys.ed)], keys.ed[i%len(keys.ed)]
	case 6:
		fp := sha256.Sum256([]byte("certificate of " + s.id))
		s.auth, s.fingerprint, s.maxTTL = domain.CredX509, hex.EncodeToString(fp[:]), 600
	case 7:
		s.hub, s.disabled = crashHubPolicy, true
	case 8:
		s.maxTTL = 3600
		if transit {
			s.hub = crashHubTransit
		}
	case 9:
		s.auth, s.pubPEM, s.signKey = domain.CredEdDSA, keys.edPEM[i%len(keys.ed)], keys.ed[i%len(keys.ed)]
		s.primary = detKey("primary", s.id)
		if allowInvalid && i%50 == 9 {
			s.hub, s.invalid = crashHubAbsent, true
		}
	}
	return s
}

// detKey is a key for a device that is the same every time the spec is made, so a
// request can be sent again, or checked, from its index alone.
func detKey(slot, id string) string {
	k := sha256.Sum256([]byte(slot + " key of " + id))
	return base64.StdEncoding.EncodeToString(k[:])
}

type moduleBody struct {
	ModuleID string `json:"moduleId"`
}

type createBody struct {
	DeviceID     string       `json:"deviceId"`
	Hub          string       `json:"hub"`
	PrimaryKey   string       `json:"primaryKey,omitempty"`
	SecondaryKey string       `json:"secondaryKey,omitempty"`
	Modules      []moduleBody `json:"modules,omitempty"`
	Auth         struct {
		Type            string `json:"type"`
		PublicKey       string `json:"publicKey,omitempty"`
		CertFingerprint string `json:"certFingerprint,omitempty"`
	} `json:"auth"`
	Disabled bool `json:"disabled,omitempty"`
	MaxTTL   int  `json:"maxTtlSeconds,omitempty"`
}

func (s devSpec) body() createBody {
	b := createBody{DeviceID: s.id, Hub: s.hub, PrimaryKey: s.primary, SecondaryKey: s.secondary, Disabled: s.disabled, MaxTTL: s.maxTTL}
	for _, m := range s.modules {
		b.Modules = append(b.Modules, moduleBody{m})
	}
	b.Auth.Type, b.Auth.PublicKey, b.Auth.CertFingerprint = string(s.auth), s.pubPEM, s.fingerprint
	return b
}

// creds are the secrets a create hands out once: in a 201 or on a created report line.
type creds struct {
	PrimaryKey   string `json:"primaryKey"`
	SecondaryKey string `json:"secondaryKey"`
	Modules      []struct {
		ModuleID     string `json:"moduleId"`
		PrimaryKey   string `json:"primaryKey"`
		SecondaryKey string `json:"secondaryKey"`
	} `json:"modules"`
	Auth struct {
		Type   string `json:"type"`
		Secret string `json:"secret"`
	} `json:"auth"`
}

// reportLine is one line of an import report.
type reportLine struct {
	Line     int    `json:"line"`
	DeviceID string `json:"deviceId"`
	Result   string `json:"result"`
	Reason   string `json:"reason"`
	creds
	Summary *struct{ Created, Skipped, Rejected int } `json:"summary"`
	Error   string                                    `json:"error"`
}

// matchSpec names the first field where the stored device differs from what was sent.
func matchSpec(d apiDevice, s devSpec) string {
	var mods []string
	for _, m := range d.Modules {
		mods = append(mods, m.ModuleID)
	}
	slices.Sort(mods)
	want := slices.Sorted(slices.Values(s.modules))
	ttl := 0
	if d.MaxTTLSeconds != nil {
		ttl = *d.MaxTTLSeconds
	}
	switch {
	case d.DeviceID != s.id:
		return "deviceId"
	case d.Hub != s.hub:
		return "hub"
	case d.Auth.Type != string(s.auth):
		return "credential type"
	case strings.TrimSpace(d.Auth.PublicKey) != strings.TrimSpace(s.pubPEM):
		return "public key"
	case d.Auth.CertFingerprint != s.fingerprint:
		return "certificate fingerprint"
	case d.Disabled != s.disabled:
		return "disabled"
	case ttl != s.maxTTL:
		return "maxTtlSeconds"
	case !slices.Equal(mods, want):
		return "modules"
	}
	return ""
}

var jtiSeq atomic.Int64

// assertion signs a device assertion with the device's credential: the HS256 secret
// it was given, or its private key. With a nonce it is the clockless form.
func (s devSpec) assertion(secret, nonce string) (string, error) {
	now := time.Now()
	claims := jwt.MapClaims{
		"iss": s.id, "sub": s.id, "aud": "tokensvc", "iat": now.Unix(), "exp": now.Add(time.Minute).Unix(),
		"jti": fmt.Sprintf("crash-%d-%d", now.UnixNano(), jtiSeq.Add(1)),
	}
	if nonce != "" {
		claims = jwt.MapClaims{"iss": s.id, "sub": s.id, "aud": "tokensvc", "nonce": nonce}
	}
	switch s.auth {
	case domain.CredHS256:
		return jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString([]byte(secret))
	case domain.CredES256:
		return jwt.NewWithClaims(jwt.SigningMethodES256, claims).SignedString(s.signKey)
	case domain.CredEdDSA:
		return jwt.NewWithClaims(jwt.SigningMethodEdDSA, claims).SignedString(s.signKey)
	}
	return "", fmt.Errorf("no assertion for a %s credential", s.auth)
}

// mint asks for a token as the device; the token is returned only to be verified.
//
// After a crash the embedded store cannot know which jti values its predecessor took,
// so for Leeway (30 s) it refuses assertions issued before the restart plus Leeway
// (README, security model; deviceauth.Restore) and devices use a nonce meanwhile: with
// p.nonceAuth, so does this test.
func (p *svcProc) mint(ctx context.Context, s devSpec, secret, module string) (int, string, error) {
	nonce := ""
	if p.nonceAuth {
		code, b, err := p.do(ctx, http.MethodPost, "/token/nonce", noAuth, nil)
		if err != nil || code != http.StatusOK {
			return code, "", fmt.Errorf("POST /token/nonce: %v", err)
		}
		var n struct{ Nonce string }
		if err := json.Unmarshal(b, &n); err != nil || n.Nonce == "" {
			return code, "", errors.New("nonce response does not decode")
		}
		nonce = n.Nonce
	}
	a, err := s.assertion(secret, nonce)
	if err != nil {
		return 0, "", err
	}
	path := "/token"
	if module != "" {
		path += "?module=" + module
	}
	code, b, err := p.do(ctx, http.MethodGet, path, a, nil)
	if err != nil || code != http.StatusOK {
		return code, "", err
	}
	var tr struct{ Token string }
	if err := json.Unmarshal(b, &tr); err != nil {
		return code, "", errors.New("token response does not decode")
	}
	return code, tr.Token, nil
}

// errNotFound marks a device that should exist but does not: a lost device.
var errNotFound = errors.New("not found")

// checkDevice proves that a device is there whole: its record matches what was sent,
// and, where the test knows the credential (c, or a public-key device's private key),
// a token can be minted with it and verifies with the key the create returned (or the
// operator supplied, or the hub's policy key). Errors never carry a secret.
func (p *svcProc) checkDevice(ctx context.Context, s devSpec, c *creds) error {
	code, b, err := p.do(ctx, http.MethodGet, "/devices/"+s.id, "", nil)
	switch {
	case err != nil:
		return fmt.Errorf("GET: %v", err)
	case code == http.StatusNotFound:
		return errNotFound
	case code != http.StatusOK:
		return fmt.Errorf("GET: %d %s", code, problemDetail(b))
	}
	var d apiDevice
	if err := json.Unmarshal(b, &d); err != nil {
		return fmt.Errorf("GET: %v", err)
	}
	if diff := matchSpec(d, s); diff != "" {
		return fmt.Errorf("stored with a different %s than sent", diff)
	}
	if c != nil {
		if c.Auth.Type != string(s.auth) || (s.auth == domain.CredHS256) != (c.Auth.Secret != "") {
			return errors.New("the create's answer has the wrong credential")
		}
		if s.primary != "" && c.PrimaryKey != s.primary || s.secondary != "" && c.SecondaryKey != s.secondary {
			return errors.New("the create's answer has other keys than supplied")
		}
	}
	secret := ""
	if c != nil {
		secret = c.Auth.Secret
	}
	if s.auth == domain.CredX509 || s.auth == domain.CredHS256 && secret == "" {
		return nil // no JWT for a pinned certificate; an HS256 secret nobody received
	}
	if s.disabled {
		if code, _, err := p.mint(ctx, s, secret, ""); err != nil || code != http.StatusUnauthorized {
			return fmt.Errorf("disabled device minted: %d %v, want 401", code, err)
		}
		if err := p.setDisabled(ctx, s.id, false); err != nil {
			return err
		}
		defer func() { _ = p.setDisabled(context.WithoutCancel(ctx), s.id, true) }()
	}
	code, token, err := p.mint(ctx, s, secret, "")
	if err != nil || code != http.StatusOK {
		return fmt.Errorf("GET /token: %d %v", code, err)
	}
	key := ""
	switch {
	case s.hub == crashHubPolicy:
		key = crashPolicyKey
	case c != nil:
		key = c.PrimaryKey
	default:
		key = s.primary
	}
	if key != "" {
		if err := verifyToken(token, key); err != nil {
			return err
		}
	}
	if c != nil {
		for _, m := range c.Modules {
			code, token, err := p.mint(ctx, s, secret, m.ModuleID)
			if err != nil || code != http.StatusOK {
				return fmt.Errorf("GET /token for module %s: %d %v", m.ModuleID, code, err)
			}
			if err := verifyToken(token, m.PrimaryKey); err != nil {
				return fmt.Errorf("module %s: %v", m.ModuleID, err)
			}
		}
	}
	return nil
}

func verifyToken(token, key string) error {
	k, err := signer.DecodeKey(key, signer.KeyBase64)
	if err != nil {
		return errors.New("returned key does not decode")
	}
	if _, err := signer.Verify(token, k, time.Now()); err != nil {
		return errors.New("minted token does not verify with the key the device was given")
	}
	return nil
}

func (p *svcProc) setDisabled(ctx context.Context, id string, disabled bool) error {
	code, b, err := p.do(ctx, http.MethodPatch, "/devices/"+id, "", map[string]bool{"disabled": disabled})
	if err != nil || code != http.StatusOK {
		return fmt.Errorf("PATCH disabled=%v: %d %v %s", disabled, code, err, problemDetail(b))
	}
	return nil
}

// ensureHubs creates the shared hubs, or finds them from an earlier round.
func ensureHubs(ctx context.Context, t *testing.T, p *svcProc, transit bool) {
	t.Helper()
	hubs := []map[string]any{
		{"name": crashHubKeys, "kind": "iothub", "hostname": "crash-hub.azure-devices.net"},
		{"name": crashHubPolicy, "kind": "iothub", "hostname": "crash-hub.azure-devices.net", "mode": "policy", "policyName": crashPolicyName, "policyKey": crashPolicyKey},
	}
	if transit {
		hubs = append(hubs, map[string]any{"name": crashHubTransit, "kind": "iothub", "hostname": "crash-hub.azure-devices.net", "transit": true})
	}
	for _, h := range hubs {
		code, b, err := p.do(ctx, http.MethodPost, "/hubs", "", h)
		if err != nil || code != http.StatusCreated && code != http.StatusConflict {
			t.Fatalf("create hub %s: %d %v %s", h["name"], code, err, problemDetail(b))
		}
	}
}

// forEach runs fn on 0..n-1 with a few workers.
func forEach(n int, fn func(i int)) {
	var wg sync.WaitGroup
	var next atomic.Int64
	for range 6 {
		wg.Go(func() {
			for i := int(next.Add(1)) - 1; i < n; i = int(next.Add(1)) - 1 {
				fn(i)
			}
		})
	}
	wg.Wait()
}

// failures collects problems from concurrent checks; t.Errorf gets a bounded sample.
type failures struct {
	mu   sync.Mutex
	list []string
}

func (f *failures) add(format string, args ...any) {
	f.mu.Lock()
	f.list = append(f.list, fmt.Sprintf(format, args...))
	f.mu.Unlock()
}

func (f *failures) report(t *testing.T, what string) {
	t.Helper()
	if len(f.list) > 0 {
		t.Errorf("%s: %d, want 0; first: %q", what, len(f.list), f.list[:min(len(f.list), 8)])
	}
}

// streamImport sends lines as an NDJSON import through a pipe, never more than window
// lines ahead of the report, so the body is still being sent when the service dies.
// It reads report lines as they arrive and kills the service pause after the killAfter-th,
// then keeps reading whatever the service had already sent. It returns the complete
// report lines, how many of them came before the kill, and how many input lines were
// handed to the connection.
func streamImport(ctx context.Context, t *testing.T, p *svcProc, lines [][]byte, killAfter, window int, pause time.Duration) (reps []reportLine, beforeKill, sent int) {
	t.Helper()
	pr, pw := io.Pipe()
	var received, written atomic.Int64
	stop := make(chan struct{})
	var stopOnce sync.Once
	halt := func() { stopOnce.Do(func() { close(stop) }) }
	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		for i, l := range lines {
			for int64(i) >= received.Load()+int64(window) {
				select {
				case <-stop:
					pw.CloseWithError(errors.New("import abandoned"))
					return
				case <-time.After(time.Millisecond):
				}
			}
			if _, err := pw.Write(l); err != nil {
				return
			}
			written.Add(1)
		}
		pw.Close()
	}()
	defer func() {
		halt()
		pr.Close()
		<-writerDone
	}()
	resp := postImport(ctx, t, p, pr, "POST /devices/import")
	defer resp.Body.Close()
	br := bufio.NewReaderSize(resp.Body, 64<<10)
	killed := false
	for {
		b, err := br.ReadBytes('\n')
		if err != nil {
			break // the kill, or (if killAfter was never reached) the end of the report
		}
		var r reportLine
		if err := json.Unmarshal(b, &r); err != nil {
			t.Fatalf("report line %d does not decode", len(reps)+1)
		}
		reps = append(reps, r)
		received.Add(1)
		if len(reps) == killAfter {
			time.Sleep(pause)
			sent = int(written.Load())
			p.kill()
			killed, beforeKill = true, len(reps)
		}
	}
	if !killed {
		t.Fatalf("the import ended after %d report lines, before the kill point %d", len(reps), killAfter)
	}
	halt()
	pr.Close()
	<-writerDone
	return reps, beforeKill, max(sent, int(written.Load()))
}

// importRound is scenario A once: a large mixed import killed after killAfter report
// lines, a restart on the same store, and the checks.
func importRound(t *testing.T, bin string, be *crashBackend, keys *crashKeys, round, killAfter int, pause time.Duration) {
	start := time.Now()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	const total, window = 3000, 150
	prefix := fmt.Sprintf("imp%d", round)
	specs := make([]devSpec, total)
	lines := make([][]byte, total)
	byID := map[string]int{}
	for i := range specs {
		specs[i] = specFor(keys, prefix, i, be.transit(), true)
		b, err := json.Marshal(specs[i].body())
		if err != nil {
			t.Fatal(err)
		}
		lines[i] = append(b, '\n')
		byID[specs[i].id] = i
	}

	p := startSvc(t, bin, be.env)
	ensureHubs(ctx, t, p, be.transit())
	reps, beforeKill, sent := streamImport(ctx, t, p, lines, killAfter, window, pause)
	if sent >= total {
		t.Fatalf("the whole body (%d lines) was sent before the kill; the test must kill mid-stream", total)
	}
	accepted := map[int]reportLine{}
	for _, r := range reps {
		if r.Summary != nil {
			t.Fatalf("a summary line before the kill: the import finished")
		}
		if r.Line < 1 || r.Line > sent || r.DeviceID != specs[r.Line-1].id {
			t.Fatalf("report line for input line %d names another device", r.Line)
		}
		s := specs[r.Line-1]
		switch r.Result {
		case "created":
			if s.invalid {
				t.Errorf("line %d: created a device on a hub that does not exist", r.Line)
			}
			accepted[r.Line] = r
		case "rejected":
			if !s.invalid {
				t.Errorf("line %d: rejected (%s), want created", r.Line, r.Reason)
			}
		default:
			t.Errorf("line %d: %q, want created (every device is new)", r.Line, r.Result)
		}
	}

	in := be.inspect(t) // the store as the kill left it, service down
	var groups, grouped int
	if be.vault != nil {
		groups, grouped = be.groupMarkers(t, prefix+"-")
		be.groups += groups
	}
	p2 := startSvc(t, bin, be.env)
	p2.nonceAuth = be.vault == nil
	listed, err := p2.listAllDevices(ctx)
	if err != nil {
		t.Fatalf("after restart: %v", err)
	}

	var lost, half failures
	// Every device a created line reported is there and works with what the line said.
	acceptedLines := slices.Sorted(maps.Keys(accepted))
	forEach(len(acceptedLines), func(i int) {
		l := acceptedLines[i]
		r := accepted[l]
		err := p2.checkDevice(ctx, specs[l-1], &r.creds)
		switch {
		case errors.Is(err, errNotFound):
			lost.add("line %d %s: reported created, absent after restart", l, specs[l-1].id)
		case err != nil:
			half.add("line %d %s: %v", l, specs[l-1].id, err)
		}
	})
	// Every device that exists is whole, including those whose report line was lost.
	var unreported []int
	listedIDs := map[string]bool{}
	for _, d := range listed {
		listedIDs[d.DeviceID] = true
		if !strings.HasPrefix(d.DeviceID, prefix+"-") {
			continue
		}
		i, ok := byID[d.DeviceID]
		switch {
		case !ok || i >= sent:
			half.add("%s exists but was never sent", d.DeviceID)
		case specs[i].invalid:
			half.add("%s exists on a hub that does not", d.DeviceID)
		default:
			if diff := matchSpec(d, specs[i]); diff != "" {
				half.add("%s: listed with a different %s than sent", d.DeviceID, diff)
			}
			if _, ok := accepted[i+1]; !ok {
				unreported = append(unreported, i)
			}
		}
	}
	forEach(len(unreported), func(k int) {
		s := specs[unreported[k]]
		if err := p2.checkDevice(ctx, s, nil); err != nil {
			half.add("%s (created, report line lost): %v", s.id, err)
		}
	})
	checkInspection(t, be, in, listed, listedIDs, &half)
	// What the kill may leave in Vault (an orphan marker, a claim) belongs only to a
	// line whose create was cut short: never to one reported created.
	markers, claims, _ := in.leftovers(prefix + "-")
	for _, id := range append(slices.Clone(markers), claims...) {
		if i, ok := byID[id]; !ok || accepted[i+1].Result == "created" {
			half.add("%s: a leftover of an interrupted create, but its line was reported created", id)
		}
	}

	// Re-importing everything that was sent: what exists as the line describes it is
	// skipped, what does not exist is created now, invalid lines stay rejected.
	reimp := reimport(ctx, t, p2, lines[:sent])
	var created, skipped, rejected, deferred, takenOver int
	var recreated, deferredLines []int
	var contract failures
	for _, r := range reimp[:len(reimp)-1] {
		s := specs[r.Line-1]
		existed := listedIDs[s.id]
		switch {
		case s.invalid && r.Result == "rejected":
			rejected++
		case existed && r.Result == "skipped":
			skipped++
		case !existed && r.Result == "created":
			created++
			recreated = append(recreated, r.Line)
			accepted[r.Line] = r
		case !existed && r.Result == "rejected" && in.hasClaim("devices", s.id):
			// A Transit create killed while it held the device's claim: vaultstore treats
			// the claim as taken for claimTTL (2 minutes) before anyone may take it over.
			deferred++
			deferredLines = append(deferredLines, r.Line)
		default:
			contract.add("re-import line %d %s: %s (%s); existed after restart: %v", r.Line, s.id, r.Result, r.Reason, existed)
		}
	}
	if len(deferredLines) > 0 {
		// Once the claim is claimTTL old the next import takes it over, replaces any
		// Transit keys the killed create left, and creates the device.
		var again [][]byte
		for _, l := range deferredLines {
			if err := be.ageClaim(ctx, "devices", specs[l-1].id); err != nil {
				t.Fatal(err)
			}
			again = append(again, lines[l-1])
		}
		for k, r := range reimport(ctx, t, p2, again)[:len(again)] {
			l := deferredLines[k]
			if r.Result != "created" {
				contract.add("line %d %s after its stale claim expired: %s (%s), want created", l, specs[l-1].id, r.Result, r.Reason)
				continue
			}
			r.Line = l
			takenOver++
			recreated = append(recreated, l)
			accepted[l] = r
		}
	}
	forEach(len(recreated), func(k int) {
		l := recreated[k]
		r := accepted[l]
		if err := p2.checkDevice(ctx, specs[l-1], &r.creds); err != nil {
			half.add("line %d %s (created by the re-import): %v", l, specs[l-1].id, err)
		}
	})
	lost.report(t, "devices reported created but lost")
	half.report(t, "half-written or inconsistent devices")
	contract.report(t, "re-import lines against the documented contract")
	if n := p2.serverErrors.Load(); n > 0 {
		t.Errorf("%d 5xx answers after the restart, want 0", n)
	}
	t.Logf("%s, kill %v after %d report lines: %d of %d input lines sent; %d report lines before SIGKILL, %d more read after; "+
		"accepted (created lines) %d, found %d, lost %d, half-written %d; created but report lost %d; "+
		"re-import: skipped %d, created %d, rejected %d, deferred by a stale claim %d (created once it expired %d); %d 5xx after restart (%d GETs retried after 503 + Retry-After); "+
		"store after kill: %d devices; this round's group markers %d naming %d devices, orphan markers (entries) %d, stale claims %d; %v",
		be.name, pause, killAfter, sent, total, beforeKill, len(reps)-beforeKill,
		len(acceptedLines), len(acceptedLines)-len(lost.list), len(lost.list), len(half.list), len(unreported),
		skipped, created, rejected, deferred, takenOver, p2.serverErrors.Load(), p2.unavailable.Load(),
		len(in.devices), groups, grouped, len(markers), len(claims), time.Since(start).Round(time.Millisecond))
	p2.kill()
}

// postImport streams body as an NDJSON import and returns the 200 response, whose
// report the caller reads and closes; what names the call in failures.
func postImport(ctx context.Context, t *testing.T, p *svcProc, body io.Reader, what string) *http.Response {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.url+"/devices/import", body)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+crashAdmin)
	req.Header.Set("Content-Type", "application/x-ndjson")
	resp, err := p.http.Do(req)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		t.Fatalf("%s: %d %s", what, resp.StatusCode, problemDetail(b))
	}
	return resp
}

// reimport sends lines as one import and returns the whole report, summary last.
func reimport(ctx context.Context, t *testing.T, p *svcProc, lines [][]byte) []reportLine {
	t.Helper()
	pr, pw := io.Pipe()
	go func() {
		for _, l := range lines {
			if _, err := pw.Write(l); err != nil {
				return
			}
		}
		pw.Close()
	}()
	resp := postImport(ctx, t, p, pr, "re-import")
	defer resp.Body.Close()
	var out []reportLine
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var r reportLine
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("re-import report line %d does not decode", len(out)+1)
		}
		out = append(out, r)
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("re-import report: %v", err)
	}
	if len(out) != len(lines)+1 || out[len(out)-1].Summary == nil || out[len(out)-1].Error != "" {
		last := reportLine{}
		if len(out) > 0 {
			last = out[len(out)-1]
		}
		t.Fatalf("re-import: %d report lines for %d input lines, last %q %q", len(out), len(lines), last.Result, last.Error)
	}
	sum := out[len(out)-1].Summary
	if sum.Created+sum.Skipped+sum.Rejected != len(lines) {
		t.Errorf("re-import summary counts %d lines, want %d", sum.Created+sum.Skipped+sum.Rejected, len(lines))
	}
	return out
}

// checkInspection compares what the store holds (read past the service) with what the
// restarted service lists, and collects half-written records.
func checkInspection(t *testing.T, be *crashBackend, in *inspection, listed []apiDevice, listedIDs map[string]bool, half *failures) {
	t.Helper()
	for _, pr := range in.problems {
		half.add("%s store: %s", be.name, pr)
	}
	for id := range in.devices {
		if !listedIDs[id] {
			half.add("%s store holds %q, which the restarted service does not list", be.name, id)
		}
	}
	for _, d := range listed {
		if _, ok := in.devices[d.DeviceID]; !ok {
			half.add("the restarted service lists %q, which the %s store did not hold after the kill", d.DeviceID, be.name)
		}
	}
	for _, c := range in.staleClaims {
		// Only Transit creates and deletes take claims; a claim on anything else, or one
		// on a device that is absent yet has a record, would be a broken write order.
		if !strings.HasPrefix(c, "devices/") && !strings.HasPrefix(c, "hubs/") {
			half.add("claim %q of an unknown kind", c)
		}
	}
}

// provResult is one POST of scenario B.
type provResult struct {
	code  int // 0: no answer (the kill)
	creds *creds
}

// provisionRound is scenario B once: concurrent POST /devices (and POST /hubs) killed
// after killAfter 201s, a restart on the same store, and the checks.
func provisionRound(t *testing.T, bin string, be *crashBackend, keys *crashKeys, round, killAfter int) {
	start := time.Now()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	prefix := fmt.Sprintf("prov%d", round)
	const maxDevices, workers = 5000, 8

	p := startSvc(t, bin, be.env)
	ensureHubs(ctx, t, p, be.transit())
	var (
		mu       sync.Mutex
		devices  = map[int]provResult{}
		hubs     = map[string]provResult{}
		hubSpecs = map[string]map[string]any{}
		next     atomic.Int64
		ok201    atomic.Int64
		killed   atomic.Bool
		killOnce sync.Once
		wg       sync.WaitGroup
	)
	kill := func() { killOnce.Do(func() { killed.Store(true); p.kill() }) }
	for range workers {
		wg.Go(func() {
			for !killed.Load() {
				i := int(next.Add(1)) - 1
				if i >= maxDevices {
					return
				}
				s := specFor(keys, prefix, i, be.transit(), false)
				code, b, err := p.do(ctx, http.MethodPost, "/devices", "", s.body())
				res := provResult{code: code}
				if err != nil {
					res.code = 0
				} else if code == http.StatusCreated {
					var c creds
					if json.Unmarshal(b, &c) != nil {
						res.code = 0 // a torn answer is as good as none
					} else {
						res.creds = &c
					}
				}
				mu.Lock()
				devices[i] = res
				mu.Unlock()
				if res.creds != nil && ok201.Add(1) == int64(killAfter) {
					kill()
				}
			}
		})
	}
	wg.Go(func() {
		for k := 0; !killed.Load(); k++ {
			name := fmt.Sprintf("%s-hub%02d", prefix, k)
			h := map[string]any{"name": name, "kind": "iothub", "hostname": "crash-hub.azure-devices.net", "mode": "policy", "policyName": crashPolicyName, "policyKey": crashPolicyKey}
			if be.transit() && k%2 == 1 {
				h["transit"] = true // the policy key goes into Transit under a claim
			}
			code, _, err := p.do(ctx, http.MethodPost, "/hubs", "", h)
			if err != nil {
				code = 0
			}
			mu.Lock()
			hubs[name], hubSpecs[name] = provResult{code: code}, h
			mu.Unlock()
			time.Sleep(15 * time.Millisecond)
		}
	})
	wg.Wait()
	kill()
	if int(ok201.Load()) < killAfter {
		t.Fatalf("only %d devices created before the provisioning stopped; the kill point %d was never reached", ok201.Load(), killAfter)
	}

	in := be.inspect(t)
	p2 := startSvc(t, bin, be.env)
	p2.nonceAuth = be.vault == nil
	listed, err := p2.listAllDevices(ctx)
	if err != nil {
		t.Fatalf("after restart: %v", err)
	}
	listedIDs := map[string]bool{}
	for _, d := range listed {
		listedIDs[d.DeviceID] = true
	}
	var lost, half, after5xx, unexpected failures
	idx := slices.Sorted(maps.Keys(devices))
	var accepted, unanswered, retryCreated, retryExists, deferred, takenOver atomic.Int64
	forEach(len(idx), func(k int) {
		i := idx[k]
		res, s := devices[i], specFor(keys, prefix, i, be.transit(), false)
		switch {
		case res.creds != nil:
			accepted.Add(1)
			err := p2.checkDevice(ctx, s, res.creds)
			switch {
			case errors.Is(err, errNotFound):
				lost.add("%s: answered 201, absent after restart", s.id)
			case err != nil:
				half.add("%s (answered 201): %v", s.id, err)
			}
		case res.code == 0 || res.code >= 500:
			// The answer was lost: retry the same request.
			unanswered.Add(1)
			code, b, err := p2.do(ctx, http.MethodPost, "/devices", "", s.body())
			switch {
			case err != nil:
				unexpected.add("%s: retry: %v", s.id, err)
			case code >= 500:
				after5xx.add("%s: retry answered %d %s", s.id, code, problemDetail(b))
			case code == http.StatusCreated:
				retryCreated.Add(1)
				var c creds
				if json.Unmarshal(b, &c) != nil {
					unexpected.add("%s: retry 201 does not decode", s.id)
					return
				}
				if listedIDs[s.id] {
					half.add("%s: listed after restart, yet a retry created it", s.id)
				}
				if err := p2.checkDevice(ctx, s, &c); err != nil {
					half.add("%s (created by the retry): %v", s.id, err)
				}
			case code == http.StatusConflict:
				err := p2.checkDevice(ctx, s, nil)
				switch {
				case errors.Is(err, errNotFound) && in.hasClaim("devices", s.id):
					// A Transit create's claim, left by the kill: taken for claimTTL (2
					// minutes), then taken over by the next create.
					deferred.Add(1)
					if err := be.ageClaim(ctx, "devices", s.id); err != nil {
						unexpected.add("%s: %v", s.id, err)
						return
					}
					code, b, err := p2.do(ctx, http.MethodPost, "/devices", "", s.body())
					var c creds
					if err != nil || code != http.StatusCreated || json.Unmarshal(b, &c) != nil {
						unexpected.add("%s: retry once its stale claim expired: %d %v %s, want 201", s.id, code, err, problemDetail(b))
						return
					}
					takenOver.Add(1)
					if err := p2.checkDevice(ctx, s, &c); err != nil {
						half.add("%s (created once its stale claim expired): %v", s.id, err)
					}
				case err != nil:
					half.add("%s: retry answered 409, but: %v", s.id, err)
				default:
					retryExists.Add(1)
				}
			default:
				unexpected.add("%s: retry answered %d %s", s.id, code, problemDetail(b))
			}
		default:
			unexpected.add("%s: answered %d before the kill", s.id, res.code)
		}
	})
	for _, d := range listed {
		if !strings.HasPrefix(d.DeviceID, prefix+"-") {
			continue
		}
		i, err := strconv.Atoi(strings.TrimPrefix(d.DeviceID, prefix+"-"))
		if _, sent := devices[i]; err != nil || !sent {
			half.add("%s exists but was never sent", d.DeviceID)
			continue
		}
		if diff := matchSpec(d, specFor(keys, prefix, i, be.transit(), false)); diff != "" {
			half.add("%s: listed with a different %s than sent", d.DeviceID, diff)
		}
	}
	checkInspection(t, be, in, listed, listedIDs, &half)
	// What the kill may leave in Vault belongs only to a request it cut short.
	markers, claims, hubClaims := in.leftovers(prefix + "-")
	for _, id := range append(slices.Clone(markers), claims...) {
		i, err := strconv.Atoi(strings.TrimPrefix(id, prefix+"-"))
		if res, ok := devices[i]; err != nil || !ok || res.code != 0 {
			half.add("%s: a leftover of an interrupted create, but its request was answered", id)
		}
	}
	for _, name := range hubClaims {
		if hubs[name].code != 0 {
			half.add("hub %s: a claim left by an interrupted create, but its request was answered", name)
		}
	}

	// Hubs: every 201 is there, every lost answer retried, and every hub that exists
	// works: a device on it gets a token signed with its policy key.
	var hubsCreated, hubsWorking int
	for name, res := range hubs {
		switch res.code {
		case http.StatusCreated:
			hubsCreated++
		case 0, 500, 502, 503, 504:
			code, b, err := p2.do(ctx, http.MethodPost, "/hubs", "", hubSpecs[name])
			switch {
			case err != nil || code >= 500:
				after5xx.add("hub %s: retry: %d %v %s", name, code, err, problemDetail(b))
				continue
			case code == http.StatusConflict:
				code, _, _ := p2.do(ctx, http.MethodGet, "/hubs/"+name, "", nil)
				if code == http.StatusNotFound && in.hasClaim("hubs", name) {
					deferred.Add(1)
					if err := be.ageClaim(ctx, "hubs", name); err != nil {
						t.Fatal(err)
					}
					code, b, err := p2.do(ctx, http.MethodPost, "/hubs", "", hubSpecs[name])
					if err != nil || code != http.StatusCreated {
						unexpected.add("hub %s: retry once its stale claim expired: %d %v %s, want 201", name, code, err, problemDetail(b))
						continue
					}
					takenOver.Add(1)
				}
			case code != http.StatusCreated:
				unexpected.add("hub %s: retry answered %d %s", name, code, problemDetail(b))
				continue
			}
		default:
			unexpected.add("hub %s: answered %d before the kill", name, res.code)
			continue
		}
		s := devSpec{id: "hc-" + name, hub: name, auth: domain.CredHS256}
		code, b, err := p2.do(ctx, http.MethodPost, "/devices", "", s.body())
		var c creds
		if err != nil || code != http.StatusCreated || json.Unmarshal(b, &c) != nil {
			half.add("hub %s: creating a device on it: %d %v", name, code, err)
			continue
		}
		code, token, err := p2.mint(ctx, s, c.Auth.Secret, "")
		if err != nil || code != http.StatusOK {
			half.add("hub %s: minting for a device on it: %d %v", name, code, err)
			continue
		}
		if err := verifyToken(token, crashPolicyKey); err != nil {
			half.add("hub %s: %v", name, err)
			continue
		}
		hubsWorking++
	}
	lost.report(t, "devices answered 201 but lost")
	half.report(t, "half-written or inconsistent records")
	after5xx.report(t, "5xx after the restart")
	unexpected.report(t, "unexpected answers")
	if n := p2.serverErrors.Load(); n > 0 {
		t.Errorf("%d 5xx answers after the restart, want 0", n)
	}
	t.Logf("%s, kill after %d created: accepted (201) %d, found %d, lost %d, half-written %d; "+
		"answers lost to the kill %d: retry created %d, retry 409 and present %d, deferred by a stale claim %d (created once it expired %d); %d 5xx after restart (%d GETs retried after 503 + Retry-After); "+
		"hubs: %d answered 201, %d sent, %d working after restart; "+
		"store after kill: %d devices; this round's orphan markers %d, stale claims %d (hubs %d); %v",
		be.name, killAfter, accepted.Load(), accepted.Load()-int64(len(lost.list)), len(lost.list), len(half.list),
		unanswered.Load(), retryCreated.Load(), retryExists.Load(), deferred.Load(), takenOver.Load(), p2.serverErrors.Load(), p2.unavailable.Load(),
		hubsCreated, len(hubs), hubsWorking,
		len(in.devices), len(markers), len(claims), len(hubClaims), time.Since(start).Round(time.Millisecond))
	p2.kill()
}
