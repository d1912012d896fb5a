package httpapi_test

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/tokensvc/tokensvc/internal/oapi"
)

// TestImportStoppedEarlyKeepsTheConnectionSane: an import that stops before the end of
// its body (here at a CSV syntax error) returns while the server still holds unread
// body on a full-duplex connection. net/http then panicked peeking for the next
// keep-alive request ("invalid concurrent Body.Read call", golang/go#68560) — a panic
// a client could cause at will. Nothing may reach the server's error log (the service
// log at WARN), and the connection must serve the next request.
func TestImportStoppedEarlyKeepsTheConnectionSane(t *testing.T) {
	e := mustEnv(t)
	e.mustHub(oapi.HubCreate{Name: "main", Kind: oapi.Iothub, Hostname: hubHost})
	// The service's own server: its error log goes to the service log at WARN.
	client, url := e.http, e.url
	logBefore := len(e.logBuf.String())

	for round := range 20 {
		var body bytes.Buffer
		body.WriteString("id,hub,authType\r\n")
		fmt.Fprintf(&body, "early-%d,main,hs256\r\n", round)
		// A CSV syntax error stops the import; the lines after it are left unread.
		body.WriteString("bad\"quote,main,hs256\r\n")
		for i := range 2000 {
			fmt.Fprintf(&body, "late-%d-%d,main,hs256\r\n", round, i)
		}
		req, err := http.NewRequest(http.MethodPost, url+"/devices/import", &body)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+adminToken)
		req.Header.Set("Content-Type", "text/csv")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		report, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != 200 || !strings.Contains(string(report), "stopped here") {
			t.Fatalf("round %d: got %d %v %.300s, want 200 and a report that stops at the bad record", round, resp.StatusCode, err, report)
		}
		if h, err := client.Get(url + "/healthz"); err != nil || h.StatusCode != 200 {
			t.Fatalf("round %d: the next request failed: %v", round, err)
		} else {
			h.Body.Close()
		}
	}
	if s := e.logBuf.String()[logBefore:]; strings.Contains(s, `"level":"WARN"`) || strings.Contains(s, "panic") {
		t.Fatalf("server error log:\n%s", s)
	}
}
