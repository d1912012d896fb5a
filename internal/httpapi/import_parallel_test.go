package httpapi_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokensvc/tokensvc/internal/app"
	"github.com/tokensvc/tokensvc/internal/domain"
	"github.com/tokensvc/tokensvc/internal/oapi"
	"github.com/tokensvc/tokensvc/internal/store"
	"github.com/tokensvc/tokensvc/internal/store/filestore"
)

// heldStore is the real embedded store, except that the create of each ID in hold
// waits until the creates of the IDs it names have returned (so later lines finish
// first), then fails with fail[id] if set instead of writing.
type heldStore struct {
	store.Store
	hold map[string][]string
	fail map[string]error

	mu   sync.Mutex
	done map[string]bool
	cond *sync.Cond
}

func newHeldStore(t *testing.T, hold map[string][]string, fail map[string]error) *heldStore {
	t.Helper()
	st, err := filestore.Open(filepath.Join(t.TempDir(), "tokensvc.db"), make([]byte, 32))
	if err != nil {
		t.Fatal(err)
	}
	h := &heldStore{Store: st, hold: hold, fail: fail, done: map[string]bool{}}
	h.cond = sync.NewCond(&h.mu)
	return h
}

func (h *heldStore) CreateDevice(ctx context.Context, d domain.Device) error {
	deadline := time.Now().Add(20 * time.Second) // a sequential import would wait forever
	h.mu.Lock()
	for _, after := range h.hold[d.ID] {
		for !h.done[after] && time.Now().Before(deadline) {
			h.mu.Unlock()
			time.Sleep(time.Millisecond)
			h.mu.Lock()
		}
	}
	h.mu.Unlock()
	err := h.fail[d.ID]
	if err == nil {
		err = h.Store.CreateDevice(ctx, d)
	}
	h.mu.Lock()
	h.done[d.ID] = true
	h.mu.Unlock()
	return err
}

func (h *heldStore) wasDone(id string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.done[id]
}

func importLines(ids ...string) string {
	var b strings.Builder
	for _, id := range ids {
		hub := "main"
		if id == "dup-other" {
			id, hub = "dup", "other"
		}
		fmt.Fprintf(&b, `{"deviceId":%q,"hub":%q,"auth":{"type":"hs256"}}`+"\n", id, hub)
	}
	return b.String()
}

// TestImportParallelReportsInInputOrder: with 8 workers and the first lines held until
// later ones are done, the report still comes line by line in input order, each line
// with its own device's secret, and a repeated ID gets what it would one line at a
// time (skipped, or rejected on another hub) although its first line was still held.
func TestImportParallelReportsInInputOrder(t *testing.T) {
	st := newHeldStore(t, map[string][]string{"a": {"c", "e"}, "dup": {"d"}, "b": {"e"}}, nil)
	e := mustEnvWith(t, envOptions{store: st, config: func(c *app.Config) { c.ImportWorkers = 8 }})
	e.mustHub(oapi.HubCreate{Name: "main", Kind: oapi.Iothub, Hostname: hubHost})
	e.mustHub(oapi.HubCreate{Name: "other", Kind: oapi.Iothub, Hostname: hubHost})
	ids := []string{"a", "dup", "b", "c", "dup", "d", "e", "dup-other", "f"}
	lines := e.mustImport("application/x-ndjson", importLines(ids...))
	if got, want := results(lines), "a:created dup:created b:created c:created dup:skipped d:created e:created dup:rejected f:created"; got != want {
		t.Fatalf("got %s, want %s", got, want)
	}
	for i, l := range lines[:len(lines)-1] {
		if l.Line != i+1 {
			t.Errorf("report line %d is for input line %d", i+1, l.Line)
		}
		if l.Result == "created" {
			if resp := e.getToken(e.hs256(l.DeviceID, l.Auth.Secret), nil); resp.StatusCode() != 200 {
				t.Errorf("%s: its reported secret does not get a token: %d", l.DeviceID, resp.StatusCode())
			}
		}
	}
}

// TestImportParallelStoreFailureStopsAtItsLine: a store failure on line 2, held until
// lines after it are done, stops the import there: no line after it is started once
// the failure is known, the lines already under way are reported (and exist), nothing
// unreported was created, and the summary names line 2.
func TestImportParallelStoreFailureStopsAtItsLine(t *testing.T) {
	st := newHeldStore(t, map[string][]string{"broken": {"c", "d"}}, map[string]error{"broken": fmt.Errorf("vault: %w", store.ErrUnavailable)})
	e := mustEnvWith(t, envOptions{store: st, config: func(c *app.Config) { c.ImportWorkers = 4 }})
	e.mustHub(oapi.HubCreate{Name: "main", Kind: oapi.Iothub, Hostname: hubHost})
	var ids []string
	ids = append(ids, "a", "broken", "c", "d")
	for i := range 200 {
		ids = append(ids, fmt.Sprintf("late-%03d", i))
	}
	lines := e.mustImport("application/x-ndjson", importLines(ids...))
	sum := lines[len(lines)-1]
	if !strings.HasPrefix(sum.Error, "line 2: the key store is unavailable; the import stopped here") {
		t.Errorf("summary error: got %q, want it to name line 2", sum.Error)
	}
	reported := map[string]bool{}
	prev := 0
	for _, l := range lines[:len(lines)-1] {
		if l.Line <= prev || l.Line == 2 || l.Result != "created" {
			t.Errorf("report line %+v: want created lines in input order, none for line 2", l)
		}
		prev = l.Line
		reported[l.DeviceID] = true
	}
	if !reported["a"] || !reported["c"] || !reported["d"] {
		t.Errorf("reported %v: want a, c and d (c and d finished while line 2 was held)", reported)
	}
	if len(reported) > 3+2*4+4 {
		t.Errorf("%d lines reported: lines kept being started after the failure", len(reported))
	}
	if sum.Summary.Created != len(reported) {
		t.Errorf("summary: %d created, want the %d reported", sum.Summary.Created, len(reported))
	}
	for _, id := range ids {
		_, err := st.Store.GetDevice(t.Context(), id)
		if exists := err == nil; exists != reported[id] {
			t.Errorf("%s: exists %v, reported %v", id, exists, reported[id])
		}
	}
	if !st.wasDone("c") {
		t.Errorf("line 3 was not imported")
	}
}

// TestImportParallelClientGoneStopsIt: a client that goes away mid-import, with its body
// still open, stops the import: the handler ends (the next import on the service
// works), no more devices are created, and nothing reaches the error log.
func TestImportParallelClientGoneStopsIt(t *testing.T) {
	e := mustEnvWith(t, envOptions{config: func(c *app.Config) { c.ImportWorkers = 8 }})
	e.mustHub(oapi.HubCreate{Name: "main", Kind: oapi.Iothub, Hostname: hubHost})
	logBefore := len(e.logBuf.String())
	pr, pw := io.Pipe()
	defer pw.Close()
	ctx, cancel := context.WithCancel(t.Context())
	req := e.streamingImport(pr).WithContext(ctx)
	go func() {
		for i := 0; ; i++ {
			if _, err := io.WriteString(pw, importLines(fmt.Sprintf("gone-%05d", i))); err != nil {
				return
			}
		}
	}()
	resp, err := e.http.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	rd := bufio.NewReader(resp.Body)
	for range 50 {
		if _, err := rd.ReadString('\n'); err != nil {
			t.Fatalf("report: %v", err)
		}
	}
	cancel()
	resp.Body.Close()
	count := func() int {
		page, err := e.store.ListDevices(t.Context(), "", 100_000)
		if err != nil {
			t.Fatal(err)
		}
		return len(page.Devices)
	}
	// The service notices at its next report line at the latest, finishes the lines under
	// way and ends the import, saying so in its log.
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(e.logBuf.String()[logBefore:], `"reportLost":true`) {
		if time.Now().After(deadline) {
			t.Fatalf("the import did not end after its client left; log:\n%.2000s", e.logBuf.String()[logBefore:])
		}
		time.Sleep(10 * time.Millisecond)
	}
	n := count()
	time.Sleep(200 * time.Millisecond)
	if after := count(); after != n {
		t.Errorf("devices kept being created after the import ended: %d, then %d", n, after)
	}
	if got := results(e.mustImport("application/x-ndjson", importLines("after"))); got != "after:created" {
		t.Errorf("the next import: got %s", got)
	}
	if s := e.logBuf.String()[logBefore:]; strings.Contains(s, `"level":"WARN"`) || strings.Contains(s, "panic") {
		t.Errorf("log after the client left:\n%.2000s", s)
	}
}
