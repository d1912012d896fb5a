package httpapi_test

import (
	"bufio"
	"bytes"
	"flag"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tokensvc/tokensvc/internal/oapi"
)

// requestIDs are per process (chi's host prefix), so the golden masks them.
var requestIDs = regexp.MustCompile(`"requestId":"[^"]*"`)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

// TestGetTokenGolden holds the GET /token path to the bytes it answered before the
// token path was made leaner: status, every response header and the body of a device
// token, a module token over WebSocket, a refused assertion and a spec violation, on
// fixed keys and a fixed clock, then the audit records and the service's own /metrics families those requests
// moved. Timing-dependent values (histogram sums and bucket counts) are masked; names,
// help, types, label sets, bucket bounds, counter values and counts are not.
func TestGetTokenGolden(t *testing.T) {
	e := mustEnv(t)
	e.mustHub(oapi.HubCreate{Name: "main", Kind: oapi.Iothub, Hostname: hubHost})
	created := e.mustDevice(oapi.DeviceCreate{DeviceId: "golden-1", Hub: "main",
		Auth:       oapi.CredentialCreate{Type: oapi.Hs256},
		PrimaryKey: ptr(policyKey), SecondaryKey: ptr(groupKey),
		Modules: &[]oapi.ModuleCreate{{ModuleId: "mod-a", PrimaryKey: ptr(ehKey)}},
	})
	secret := *created.Auth.Secret
	e.clock.Advance(700 * time.Millisecond)

	var out bytes.Buffer
	for _, c := range []struct{ name, target, auth string }{
		{"device", "/token", "Bearer " + e.hs256("golden-1", secret)},
		{"module over websocket", "/token?module=mod-a&transport=ws&ttl=600", "Bearer " + e.hs256("golden-1", secret)},
		{"bad assertion", "/token", "Bearer not-a-jwt"},
		{"bad ttl", "/token?ttl=soon", "Bearer " + e.hs256("golden-1", secret)},
	} {
		req := httptest.NewRequest(http.MethodGet, c.target, nil)
		req.Header.Set("Authorization", c.auth)
		rec := httptest.NewRecorder()
		e.handler.ServeHTTP(rec, req)
		out.WriteString("### " + c.name + ": GET " + c.target + "\n")
		writeResponse(&out, rec.Code, rec.Header(), rec.Body.Bytes())
	}

	out.WriteString("### audit records\n")
	out.WriteString(requestIDs.ReplaceAllString(e.audit.String(), `"requestId":"<masked>"`))

	req := httptest.NewRequest(http.MethodGet, "/metrics", nil)
	rec := httptest.NewRecorder()
	e.handler.ServeHTTP(rec, req)
	out.WriteString("### metrics (tokensvc_ families)\n")
	out.WriteString(maskMetrics(rec.Body.String()))

	checkGolden(t, filepath.Join("testdata", "get-token.golden"), out.Bytes())
}

// writeResponse writes status, headers (sorted; X-Request-Id masked) and body.
func writeResponse(out *bytes.Buffer, code int, h http.Header, body []byte) {
	out.WriteString("status " + http.StatusText(code) + "\n")
	for _, k := range slices.Sorted(func(yield func(string) bool) {
		for k := range h {
			if !yield(k) {
				return
			}
		}
	}) {
		v := strings.Join(h[k], ", ")
		if k == "X-Request-Id" {
			v = "<masked>"
		}
		out.WriteString(k + ": " + v + "\n")
	}
	out.WriteString("\n")
	out.Write(body)
	out.WriteString("\n")
}

// maskMetrics keeps the tokensvc_ families (of the store's, the token path's reads) and
// masks the values that depend on timing.
func maskMetrics(text string) string {
	var b strings.Builder
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		line := sc.Text()
		name := strings.TrimPrefix(strings.TrimPrefix(line, "# HELP "), "# TYPE ")
		if !strings.HasPrefix(name, "tokensvc_") {
			continue
		}
		series, _, _ := strings.Cut(line, " ")
		// Store series other than the token path's own reads count what the store does
		// at start and on writes, which the store's owners change; not this file's matter.
		if strings.HasPrefix(series, "tokensvc_store_") && !strings.Contains(series, `op="get_device"`) && !strings.Contains(series, `op="get_hub"`) {
			continue
		}
		if !strings.HasPrefix(line, "#") && (strings.Contains(series, "_bucket") || strings.HasSuffix(series, "_sum") || strings.Contains(series, "_sum{")) {
			line = series + " <masked>"
		}
		b.WriteString(line + "\n")
	}
	return b.String()
}

// checkGolden compares got with the file at path, or rewrites it with -update.
func checkGolden(t *testing.T, path string, got []byte) {
	t.Helper()
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	gl, wl := strings.Split(string(got), "\n"), strings.Split(string(want), "\n")
	for i := range max(len(gl), len(wl)) {
		g, w := "<none>", "<none>"
		if i < len(gl) {
			g = gl[i]
		}
		if i < len(wl) {
			w = wl[i]
		}
		if g != w {
			t.Fatalf("%s line %d:\ngot  %s\nwant %s\n(-update rewrites it after an intended change)", path, i+1, g, w)
		}
	}
}
