package httpapi_test

import (
	"bytes"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/tokensvc/tokensvc/internal/oapi"
	"github.com/tokensvc/tokensvc/internal/syncbuf"
)

// TestImportStoppedEarlyKeepsTheConnectionSane: an import that stops before the end of
// its body (here at a CSV syntax error) returns while the server still holds unread
// body on a full-duplex connection. net/http then panicked peeking for the next
// keep-alive request ("invalid concurrent Body.Read call", golang/go#68560) — a panic
// a client could cause at will. Nothing may reach the server's error log, and the
// connection must serve the next request.
func TestImportStoppedEarlyKeepsTheConnectionSane(t *testing.T) {
	e := mustEnv(t)
	e.mustHub(oapi.HubCreate{Name: "main", Kind: oapi.Iothub, Hostname: hubHost})
	errLog := &syncbuf.Buffer{}
	srv := httptest.NewUnstartedServer(e.srv.Config.Handler)
	srv.Config.ErrorLog = log.New(errLog, "", 0)
	srv.Start()
	t.Cleanup(srv.Close)
	client := srv.Client()

	for round := range 20 {
		var body bytes.Buffer
		body.WriteString("id,hub,authType\r\n")
		fmt.Fprintf(&body, "early-%d,main,hs256\r\n", round)
		// A CSV syntax error stops the import; the lines after it are left unread.
		body.WriteString("bad\"quote,main,hs256\r\n")
		for i := range 2000 {
			fmt.Fprintf(&body, "late-%d-%d,main,hs256\r\n", round, i)
		}
		req, err := http.NewRequest(http.MethodPost, srv.URL+"/devices/import", &body)
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
		if h, err := client.Get(srv.URL + "/healthz"); err != nil || h.StatusCode != 200 {
			t.Fatalf("round %d: the next request failed: %v", round, err)
		} else {
			h.Body.Close()
		}
	}
	if s := errLog.String(); s != "" {
		t.Fatalf("server error log:\n%s", s)
	}
}
