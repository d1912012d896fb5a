package main

import (
	"crypto/tls"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/tokensvc/tokensvc/internal/testca"
)

// TestRunTLSHandshakeLimit serves HTTPS with two handshake slots: a burst of new
// connections all get through (they queue for slots), HTTP/2 is still offered, and a
// negative limit is refused at startup.
func TestRunTLSHandshakeLimit(t *testing.T) {
	if _, err := parseConfig(nil, func(k string) string {
		return map[string]string{"TOKENSVC_MAX_HANDSHAKES": "-1", "TOKENSVC_DATA_DIR": t.TempDir()}[k]
	}, io.Discard); err == nil || !strings.Contains(err.Error(), "handshakes") {
		t.Fatalf("negative handshake limit: got %v, want a refusal", err)
	}
	dir := t.TempDir()
	server := testca.SelfSigned(t, testca.Spec{CommonName: "tokensvc", Hosts: []string{"127.0.0.1"}})
	server.WriteCert(t, filepath.Join(dir, "tls.crt"))
	server.WriteKey(t, filepath.Join(dir, "tls.key"))
	in := mustStart(t, map[string]string{
		"TOKENSVC_DATA_DIR":       filepath.Join(dir, "data"),
		"TOKENSVC_ADMIN_TOKEN":    "tls-admin-token-0123456789",
		"TOKENSVC_TLS_CERT":       filepath.Join(dir, "tls.crt"),
		"TOKENSVC_TLS_KEY":        filepath.Join(dir, "tls.key"),
		"TOKENSVC_MAX_HANDSHAKES": "2",
	})
	roots := testca.Pool(server)
	get := func(h2 bool) (int, error) {
		tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}, DisableKeepAlives: true, ForceAttemptHTTP2: h2}
		defer tr.CloseIdleConnections()
		resp, err := (&http.Client{Transport: tr}).Get(in.url + "/healthz")
		if err != nil {
			return 0, err
		}
		defer resp.Body.Close()
		_, err = io.Copy(io.Discard, resp.Body)
		return resp.ProtoMajor, err
	}
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for range 16 {
		wg.Go(func() {
			_, err := get(false)
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("new connection in a burst: %v", err)
		}
	}
	if proto, err := get(true); err != nil || proto != 2 {
		t.Errorf("HTTP/2: got HTTP/%d, %v", proto, err)
	}
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Get(in.url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"tokensvc_tls_handshakes_in_progress", "tokensvc_tls_handshakes_waited_total", "tokensvc_tls_handshakes_refused_total"} {
		if !strings.Contains(string(body), "\n"+name+" ") {
			t.Errorf("/metrics has no %s", name)
		}
	}
}
