package httpapi_test

import (
	"net/http"
	"strings"
	"testing"
)

// TestImportWithJSONContentTypeIsNotBuffered: the import route is exempt from the 1 MiB
// body cap because it streams, so no middleware may read its body whole. Sent as
// application/json (which the strict-JSON middleware would otherwise read in full and
// reject as "not one JSON value"), it must reach the import handler and get its 415.
func TestImportWithJSONContentTypeIsNotBuffered(t *testing.T) {
	e := mustEnv(t)
	line := `{"deviceId":"d","hub":"main","auth":{"type":"hs256"}}` + "\n"
	body := strings.NewReader(strings.Repeat(line, 40_000)) // ~2 MiB of NDJSON: not one JSON value
	resp, got := e.rawRequest(http.MethodPost, "/devices/import", adminToken, "application/json", body)
	if resp.StatusCode != http.StatusUnsupportedMediaType {
		t.Fatalf("got %d %s, want 415 from the import handler", resp.StatusCode, got)
	}
}
