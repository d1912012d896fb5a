package main

// Plumbing for crash_test.go: the real tokensvc binary as a child process (so SIGKILL is
// a real kill -9), plain HTTP helpers, and inspections of what the stores hold after a
// kill, below the service's own view of them: each store's consistency check, then its
// records read through the store API.

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	vault "github.com/hashicorp/vault/api"

	"github.com/tokensvc/tokensvc/internal/domain"
	"github.com/tokensvc/tokensvc/internal/store"
	"github.com/tokensvc/tokensvc/internal/store/filestore"
	"github.com/tokensvc/tokensvc/internal/store/vaultstore"
)

// crashAdmin is the operator token every child runs with.
const crashAdmin = "crash-admin-token-0123456789"

// buildTokensvc builds the service binary once for the calling test (no -race: the
// child only has to be the real program, killed for real).
func buildTokensvc(t *testing.T) string {
	t.Helper()
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("needs the go command to build tokensvc")
	}
	bin := filepath.Join(t.TempDir(), "tokensvc")
	cmd := exec.CommandContext(t.Context(), gobin, "build", "-o", bin, "github.com/tokensvc/tokensvc/cmd/tokensvc")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build tokensvc: %v\n%s", err, out)
	}
	return bin
}

// svcProc is one run of the tokensvc binary.
type svcProc struct {
	cmd    *exec.Cmd
	url    string
	log    *lineSink
	exited chan struct{}
	http   *http.Client
	// nonceAuth makes devices sign nonce assertions (see mint).
	nonceAuth bool
	// serverErrors counts final 5xx answers; unavailable counts GETs answered 503 with
	// Retry-After and tried again (see do).
	serverErrors, unavailable atomic.Int64
}

// lineSink collects a child's stderr (JSON log lines; the service never logs secrets)
// and reports the address of its "listening" line.
type lineSink struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	partial []byte
	addr    chan string
}

func (s *lineSink) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.buf.Write(p)
	s.partial = append(s.partial, p...)
	for {
		i := bytes.IndexByte(s.partial, '\n')
		if i < 0 {
			break
		}
		line := s.partial[:i]
		var rec struct{ Msg, Addr string }
		if json.Unmarshal(line, &rec) == nil && rec.Msg == "listening" {
			select {
			case s.addr <- rec.Addr:
			default:
			}
		}
		s.partial = s.partial[i+1:]
	}
	return len(p), nil
}

func (s *lineSink) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.String()
}

// startSvc runs bin with env (plus PATH) on a free loopback port and waits until it
// listens. The process is killed when the test ends, whatever happened.
func startSvc(t *testing.T, bin string, env []string) *svcProc {
	t.Helper()
	p := &svcProc{
		cmd:    exec.Command(bin),
		log:    &lineSink{addr: make(chan string, 1)},
		exited: make(chan struct{}),
	}
	p.cmd.Env = append([]string{
		"PATH=" + os.Getenv("PATH"),
		"TOKENSVC_ADDR=127.0.0.1:0",
		"TOKENSVC_ADMIN_TOKEN=" + crashAdmin,
		"TOKENSVC_AUDIT=off",
		"TOKENSVC_LOG_LEVEL=info",
		"TOKENSVC_DEVICE_RATE=0",
		"TOKENSVC_MAX_INFLIGHT=0",
	}, env...)
	p.cmd.Stdout = io.Discard
	p.cmd.Stderr = p.log
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start tokensvc: %v", err)
	}
	go func() {
		_ = p.cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		p.kill()
		if t.Failed() {
			t.Logf("tokensvc log (pid %d):\n%s", p.cmd.Process.Pid, tail(p.log.String(), 60))
		}
	})
	select {
	case a := <-p.log.addr:
		p.url = "http://" + a
	case <-p.exited:
		t.Fatalf("tokensvc exited before listening:\n%s", p.log.String())
	case <-time.After(30 * time.Second):
		t.Fatalf("tokensvc not listening after 30 s:\n%s", p.log.String())
	}
	p.http = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 32, DisableCompression: true}}
	return p
}

// kill sends SIGKILL and waits for the process to be gone; a no-op once it is.
func (p *svcProc) kill() {
	select {
	case <-p.exited:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.exited
	if p.http != nil {
		p.http.CloseIdleConnections()
	}
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = append([]string{fmt.Sprintf("... %d earlier lines", len(lines)-n)}, lines[len(lines)-n:]...)
	}
	return strings.Join(lines, "\n")
}

// noAuth as do's bearer sends no Authorization header.
const noAuth = "-"

// do sends a request with the admin token (or bearer, if set) and returns the status
// and body. Bodies of 2xx answers may hold secrets: callers never print them.
//
// A GET answered 503 with Retry-After (the deliberate answer when Vault is slower than
// the service's per-call deadline, e.g. on a loaded two-core machine) is tried again a
// few times and counted in p.unavailable; any 5xx that is the final answer counts in
// p.serverErrors.
func (p *svcProc) do(ctx context.Context, method, path, bearer string, body any) (int, []byte, error) {
	for attempt := 1; ; attempt++ {
		code, retryAfter, b, err := p.once(ctx, method, path, bearer, body)
		if err == nil && code == http.StatusServiceUnavailable && retryAfter && method == http.MethodGet && attempt < 4 {
			p.unavailable.Add(1)
			select {
			case <-ctx.Done():
				return 0, nil, ctx.Err()
			case <-time.After(250 * time.Millisecond):
			}
			continue
		}
		if err == nil && code >= 500 {
			p.serverErrors.Add(1)
		}
		return code, b, err
	}
}

func (p *svcProc) once(ctx context.Context, method, path, bearer string, body any) (int, bool, []byte, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, false, nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, p.url+path, rd)
	if err != nil {
		return 0, false, nil, err
	}
	switch bearer {
	case "":
		req.Header.Set("Authorization", "Bearer "+crashAdmin)
	case noAuth:
	default:
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := p.http.Do(req)
	if err != nil {
		return 0, false, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, false, nil, err
	}
	return resp.StatusCode, resp.Header.Get("Retry-After") != "", b, nil
}

// problemDetail is the detail of a problem+json body (never a secret), for messages.
func problemDetail(b []byte) string {
	var p struct{ Title, Detail string }
	if json.Unmarshal(b, &p) != nil {
		return fmt.Sprintf("(%d bytes, not a problem document)", len(b))
	}
	return strings.TrimSpace(p.Title + ": " + p.Detail)
}

// apiDevice is a device as GET /devices returns it.
type apiDevice struct {
	DeviceID string `json:"deviceId"`
	Hub      string `json:"hub"`
	Modules  []struct {
		ModuleID string `json:"moduleId"`
	} `json:"modules"`
	Auth struct {
		Type            string `json:"type"`
		PublicKey       string `json:"publicKey"`
		CertFingerprint string `json:"certFingerprint"`
	} `json:"auth"`
	Disabled      bool `json:"disabled"`
	MaxTTLSeconds *int `json:"maxTtlSeconds"`
}

// listAllDevices pages through GET /devices.
func (p *svcProc) listAllDevices(ctx context.Context) ([]apiDevice, error) {
	var all []apiDevice
	cursor := ""
	for range 10000 {
		path := "/devices?limit=1000"
		if cursor != "" {
			path += "&cursor=" + cursor
		}
		code, b, err := p.do(ctx, http.MethodGet, path, "", nil)
		if err != nil {
			return nil, err
		}
		if code != http.StatusOK {
			return nil, fmt.Errorf("GET /devices: %d %s", code, problemDetail(b))
		}
		var page struct {
			Items []apiDevice `json:"items"`
			Next  string      `json:"next"`
		}
		if err := json.Unmarshal(b, &page); err != nil {
			return nil, err
		}
		all = append(all, page.Items...)
		if page.Next == "" {
			return all, nil
		}
		cursor = urlQueryEscape(page.Next)
	}
	return nil, errors.New("GET /devices: more than 10000 pages")
}

func urlQueryEscape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.' || c == '~' {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

// storedDevice is the part of a stored device record the completeness checks look at,
// as the store's API returns it.
type storedDevice struct {
	ID, Hub, AuthType, PublicKey, CertFP string
	HasSecret, HasPrimary, HasSecondary  bool
	Modules                              []storedModule
}

type storedModule struct {
	ID                       string
	HasPrimary, HasSecondary bool
}

type storedHub struct {
	Name, Mode string
	Transit    bool
	HasKey     bool // policy or group key in the record (Transit hubs: checked by the store)
}

// inspection is what a store holds after a kill, read past the service.
type inspection struct {
	devices map[string]storedDevice
	hubs    map[string]storedHub
	// problems are half-written or inconsistent records: each one is a failure.
	problems []string
	// orphanMarkers (device IDs) and staleClaims ("devices/ID", "hubs/name") are
	// leftovers the store's write order allows after a crash (harmless by design);
	// reported, not failures.
	orphanMarkers, staleClaims []string
}

// checkedStore is a store the crash test can inspect after a kill: the store API, and
// the consistency check that knows the store's own layout and write order.
type checkedStore interface {
	store.Store
	Check(ctx context.Context) (store.Report, error)
}

var (
	_ checkedStore = (*filestore.Store)(nil)
	_ checkedStore = (*vaultstore.Store)(nil)
)

// openFileStoreCopy opens a copy of the embedded store file, so the service's own next
// Open still meets the file exactly as the kill left it. The copy must open: bbolt
// commits are all or nothing (a transaction the kill interrupted is simply absent), so
// any error is damage.
func openFileStoreCopy(t *testing.T, dataDir string) checkedStore {
	t.Helper()
	key, err := filestore.LoadOrCreateMasterKey(filepath.Join(dataDir, "master.key"))
	if err != nil {
		t.Fatal(err)
	}
	src, err := os.ReadFile(filepath.Join(dataDir, "tokensvc.db"))
	if err != nil {
		t.Fatal(err)
	}
	cp := filepath.Join(t.TempDir(), "copy.db")
	if err := os.WriteFile(cp, src, 0o600); err != nil {
		t.Fatal(err)
	}
	st, err := filestore.Open(cp, key, filestore.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatalf("the store file as the kill left it does not open: %v", err)
	}
	return st
}

// openVaultStore opens the Vault store the service uses (default mount and prefix)
// with the root token, which may also list Transit keys.
func openVaultStore(t *testing.T, c *vault.Client) checkedStore {
	t.Helper()
	st, err := vaultstore.New(c, vaultstore.Config{}, vaultstore.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// inspectStore runs the store's consistency check, then reads every hub and device
// through the store's API and checks each device against the rules every complete
// device obeys.
func inspectStore(t *testing.T, st checkedStore) *inspection {
	t.Helper()
	defer st.Close()
	ctx := t.Context()
	rep, err := st.Check(ctx)
	if err != nil {
		t.Fatalf("check the store after the kill: %v", err)
	}
	in := &inspection{devices: map[string]storedDevice{}, hubs: map[string]storedHub{}}
	for _, p := range rep.Problems {
		in.problems = append(in.problems, p.String())
	}
	for _, l := range rep.Leftovers {
		switch l.Kind {
		case store.LeftoverIndexEntry:
			in.orphanMarkers = append(in.orphanMarkers, l.Name)
		case store.LeftoverDeviceClaim:
			in.staleClaims = append(in.staleClaims, "devices/"+l.Name)
		case store.LeftoverHubClaim:
			in.staleClaims = append(in.staleClaims, "hubs/"+l.Name)
		case store.LeftoverKey:
			// Keys of a create or delete the kill cut short; the next create of that
			// device or hub replaces them.
		default:
			in.problems = append(in.problems, fmt.Sprintf("leftover %s %q (%s): no round deletes hubs", l.Kind, l.Name, l.Detail))
		}
	}
	hubs, err := st.ListHubs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range hubs {
		in.hubs[h.Name] = storedHub{Name: h.Name, Mode: string(h.Mode), Transit: h.Transit, HasKey: h.PolicyKey != "" || h.Transit}
		if (h.Mode == domain.SignPolicy || h.Mode == domain.SignGroupKey) && h.PolicyKey == "" && !h.Transit {
			in.problems = append(in.problems, fmt.Sprintf("hub %q: mode %s without its key", h.Name, h.Mode))
		}
	}
	for cursor := ""; ; {
		page, err := st.ListDevices(ctx, cursor, 1000)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range page.Devices {
			sd := storedDevice{
				ID: d.ID, Hub: d.Hub, AuthType: string(d.Auth.Type), PublicKey: d.Auth.PublicKey, CertFP: d.Auth.CertFingerprint,
				HasSecret: len(d.Auth.Secret) > 0, HasPrimary: d.PrimaryKey != "", HasSecondary: d.SecondaryKey != "",
			}
			for _, m := range d.Modules {
				sd.Modules = append(sd.Modules, storedModule{m.ID, m.PrimaryKey != "", m.SecondaryKey != ""})
			}
			in.devices[d.ID] = sd
			in.completeness(sd)
		}
		if page.Next == "" {
			break
		}
		cursor = page.Next
	}
	return in
}

// completeness checks one stored device against the rules every complete device obeys.
// Whether a Transit device's keys are all there is the store's own check.
func (in *inspection) completeness(d storedDevice) {
	bad := func(format string, args ...any) {
		in.problems = append(in.problems, fmt.Sprintf("device %q: ", d.ID)+fmt.Sprintf(format, args...))
	}
	h, ok := in.hubs[d.Hub]
	if !ok {
		bad("its hub %q does not exist", d.Hub)
		return
	}
	switch domain.CredentialType(d.AuthType) {
	case domain.CredHS256:
		if !d.HasSecret {
			bad("hs256 without its secret")
		}
	case domain.CredES256, domain.CredEdDSA:
		if d.PublicKey == "" || d.HasSecret {
			bad("%s: public key present %v, secret present %v", d.AuthType, d.PublicKey != "", d.HasSecret)
		}
	case domain.CredX509:
		if len(d.CertFP) != 64 {
			bad("x509 without its fingerprint")
		}
	case domain.CredX509CA:
	default:
		bad("unknown credential type %q", d.AuthType)
	}
	wantKeys := h.Mode == string(domain.SignDeviceKey)
	switch {
	case wantKeys && h.Transit:
		if d.HasPrimary || d.HasSecondary {
			bad("on a Transit hub, yet key fields set (primary %v, secondary %v)", d.HasPrimary, d.HasSecondary)
		}
	case wantKeys:
		if !d.HasPrimary || !d.HasSecondary {
			bad("on a deviceKey hub without its keys (primary %v, secondary %v)", d.HasPrimary, d.HasSecondary)
		}
		for _, m := range d.Modules {
			if !m.HasPrimary || !m.HasSecondary {
				bad("module %q without its keys", m.ID)
			}
		}
	default:
		if d.HasPrimary || d.HasSecondary {
			bad("device keys on a %s hub", h.Mode)
		}
	}
}

// hasClaim reports whether the inspection found a claim left on the device or hub.
func (in *inspection) hasClaim(kind, name string) bool {
	return slices.Contains(in.staleClaims, kind+"/"+name)
}

// ageClaim makes the claim on a device or hub look claimTTL old, as it will once two
// minutes have passed, so the next create takes it over as left by a crash. The child
// process's clock cannot be moved, so this is the one place the test writes a record
// of vaultstore's KV layout itself.
func ageClaim(ctx context.Context, c *vault.Client, kind, name string) error {
	_, err := c.Logical().WriteWithContext(ctx, "secret/data/tokensvc/claims/"+kind+"/"+hex.EncodeToString([]byte(name)), map[string]any{
		"data": map[string]any{"owner": "aged-by-crash-test", "op": "create", "claimedAt": time.Now().Add(-3 * time.Minute).UTC()},
	})
	return err
}

// leftovers returns the orphan markers and stale claims of devices whose IDs start with
// prefix (hub claims: hub names), as device IDs (hub names).
func (in *inspection) leftovers(prefix string) (markers, deviceClaims, hubClaims []string) {
	for _, id := range in.orphanMarkers {
		if strings.HasPrefix(id, prefix) {
			markers = append(markers, id)
		}
	}
	for _, c := range in.staleClaims {
		kind, name, _ := strings.Cut(c, "/")
		switch {
		case !strings.HasPrefix(name, prefix):
		case kind == "devices":
			deviceClaims = append(deviceClaims, name)
		default:
			hubClaims = append(hubClaims, name)
		}
	}
	return markers, deviceClaims, hubClaims
}
