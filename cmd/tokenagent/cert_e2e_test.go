package main

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokensvc/tokensvc/internal/agent/certificate"
	"github.com/tokensvc/tokensvc/internal/agent/testpeer"
	"github.com/tokensvc/tokensvc/internal/oapi"
)

// recorder is a loopback HTTP proxy in front of the service that keeps every request
// the agent sends (headers and body), to check what leaves the device.
type recorder struct {
	URL string
	mu  sync.Mutex
	req []recorded
}

type recorded struct {
	method, path string
	header       http.Header
	body         []byte
}

func startRecorder(t *testing.T, f *testpeer.CertFixture) *recorder {
	t.Helper()
	target, err := url.Parse(f.Service.URL)
	if err != nil {
		t.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: f.CA.Pool(), MinVersion: tls.VersionTLS12}}
	r := &recorder{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		req.Body = io.NopCloser(bytes.NewReader(body))
		r.mu.Lock()
		r.req = append(r.req, recorded{req.Method, req.URL.Path, req.Header.Clone(), body})
		r.mu.Unlock()
		rp.ServeHTTP(w, req)
	}))
	t.Cleanup(srv.Close)
	r.URL = srv.URL
	return r
}

func (r *recorder) requests() []recorded {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]recorded(nil), r.req...)
}

// TestAgentCertificateEndToEnd runs tokensvc with an awsiot hub in mode certificate
// (5-minute certificates), the agent through run with -certificate, -cert-dir and -link
// mqtt, and the AWS IoT Core certificate stand-in (ALPN x-amzn-mqtt-ca, certificates
// from the hub's CA, own topics only); then restarts the agent, which must go on with
// the certificate and key it kept. Every message must arrive, with no refused
// connection. The key file is 0600 and the same across the restart; no request carries
// the key, only CSRs for its public key; the cert-dir files match it. (Renewals at
// refreshAfter, with reconnects, are TestRenewalsKeepTheLinkUp in
// internal/agent/certificate.)
func TestAgentCertificateEndToEnd(t *testing.T) {
	f := testpeer.NewCertFixture(t, "thing-0001", 5*time.Minute)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("service log:\n%s", f.Service.Logs.String())
		}
	})
	rec := startRecorder(t, f)
	state, certs := filepath.Join(f.Dir, "state"), filepath.Join(f.Dir, "certs")
	args := []string{
		"-service-url", rec.URL, "-ca-file", f.CAFile, "-device-id", f.DeviceID,
		"-credential-file", f.SecretFile, "-state-dir", state, "-boot-splay", "0",
		"-backoff-min", "200ms", "-backoff-max", "1s", "-log-level", "debug",
		"-certificate", "-cert-dir", certs,
		"-link", "mqtt", "-broker-addr", f.Broker.Addr, "-telemetry", "stdin", "-telemetry-format", "json",
	}
	a := mustStartAgent(t, args)
	pub := startPublisher(a.stdin, 25*time.Millisecond)
	testpeer.WaitFor(t, "a connection with the certificate", 20*time.Second, func() bool { return len(f.Broker.Sessions()) >= 1 })
	time.Sleep(time.Second)
	sent := pub.halt()
	testpeer.WaitFor(t, "all messages at the broker", 10*time.Second, func() bool { return len(f.Broker.Published()) >= sent })
	stats := a.stop(t)

	// A restart goes on with the kept certificate and key, without asking for another.
	a2 := mustStartAgent(t, args)
	pub2 := startPublisherAt(a2.stdin, sent, 25*time.Millisecond)
	testpeer.WaitFor(t, "a reconnection after the restart", 20*time.Second, func() bool { return len(f.Broker.Sessions()) >= 2 })
	time.Sleep(500 * time.Millisecond)
	sent = pub2.halt()
	testpeer.WaitFor(t, "all messages at the broker", 10*time.Second, func() bool { return len(f.Broker.Published()) >= sent })
	stats2 := a2.stop(t)
	if ss := f.Broker.Sessions(); ss[0].Serial != ss[1].Serial || stats2["keeper"]["Reused"] != 1 || stats2["keeper"]["Fetched"] != 0 {
		t.Errorf("after the restart: sessions %+v, keeper %v; want the kept certificate reused", ss, stats2["keeper"])
	}

	// No lost message, no refusal, nothing outside the device's topics.
	seen := map[int]bool{}
	for _, p := range f.Broker.Published() {
		var m struct{ Seq int }
		if err := json.Unmarshal(p.Payload, &m); err != nil || p.ClientID != f.DeviceID || p.Topic != "devices/"+f.DeviceID+"/telemetry" {
			t.Fatalf("unexpected message %s from %s on %s", p.Payload, p.ClientID, p.Topic)
		}
		seen[m.Seq] = true
	}
	for i := range sent {
		if !seen[i] {
			t.Errorf("message %d never reached the broker", i)
		}
	}
	if bs := f.Broker.Stats(); len(bs.Refused) != 0 || bs.Denied != 0 {
		t.Errorf("broker: %+v, want no refusal and no denial", bs)
	}
	if stats["keeper"]["Fetched"] != 1 || stats["mqtt"]["Connects"] != 1 {
		t.Errorf("got keeper %v mqtt %v, want one certificate and one connection", stats["keeper"], stats["mqtt"])
	}

	// The key: 0600, the one every CSR was for, never sent.
	keyFile := certificate.KeyFileIn(certs)
	for _, p := range []string{keyFile, filepath.Join(state, "certificate.json")} {
		if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("%s: %v %v, want mode 0600", p, fi, err)
		}
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(keyPEM)
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	key := k.(*ecdsa.PrivateKey)
	d := key.D.Bytes()
	secrets := map[string]string{
		"key PEM body":           base64.StdEncoding.EncodeToString(blk.Bytes),
		"key scalar (base64)":    base64.StdEncoding.EncodeToString(d),
		"key scalar (base64url)": base64.RawURLEncoding.EncodeToString(d),
		"key scalar (hex)":       hex.EncodeToString(d),
	}
	csrs := 0
	for _, r := range rec.requests() {
		wire := string(r.body)
		for name, v := range r.header {
			wire += name + ": " + strings.Join(v, ",") + "\n"
		}
		for name, s := range secrets {
			if strings.Contains(wire, s) || strings.Contains(strings.ReplaceAll(wire, `\n`, ""), s) {
				t.Errorf("%s %s carries the %s", r.method, r.path, name)
			}
		}
		if r.path != "/token/certificate" {
			continue
		}
		var body oapi.CertificateRequest
		if err := json.Unmarshal(r.body, &body); err != nil {
			t.Fatalf("certificate request body: %v", err)
		}
		cb, _ := pem.Decode([]byte(body.Csr))
		csr, err := x509.ParseCertificateRequest(cb.Bytes)
		if err != nil || csr.CheckSignature() != nil || !key.PublicKey.Equal(csr.PublicKey) {
			t.Fatalf("a CSR is not a signed request for the device key: %v", err)
		}
		csrs++
	}
	if csrs != 1 {
		t.Errorf("CSRs sent: got %d, want 1", csrs)
	}
	logs := a.stderr.String() + a.stdout.String() + a2.stderr.String()
	for name, s := range secrets {
		if strings.Contains(logs, s) {
			t.Errorf("the agent's output contains the %s", name)
		}
	}

	// The files for legacy software: a matching pair, the last certificate, the profile.
	pair, err := tls.LoadX509KeyPair(filepath.Join(certs, certificate.ChainFile), keyFile)
	if err != nil {
		t.Fatalf("device.crt and device.key: %v", err)
	}
	last := f.Broker.Sessions()[len(f.Broker.Sessions())-1]
	if pair.Leaf.SerialNumber.Text(16) != last.Serial || len(pair.Certificate) < 2 {
		t.Errorf("device.crt: serial %x with %d certificates, want the last one used (%s) and its chain", pair.Leaf.SerialNumber, len(pair.Certificate), last.Serial)
	}
	if ca, err := os.ReadFile(filepath.Join(certs, certificate.CAFile)); err != nil || string(ca) != f.HubCA {
		t.Errorf("ca.crt: %v; want the hub's CA chain", err)
	}
	var prof oapi.MqttProfile
	if b, err := os.ReadFile(filepath.Join(certs, certificate.MQTTFile)); err != nil || json.Unmarshal(b, &prof) != nil ||
		prof.Port != 443 || prof.Alpn == nil || (*prof.Alpn)[0] != "x-amzn-mqtt-ca" || prof.ClientId != f.DeviceID {
		t.Errorf("mqtt.json: %+v %v, want port 443, ALPN x-amzn-mqtt-ca, client ID %s", prof, err, f.DeviceID)
	}
	t.Logf("%d messages; keeper %v / %v; mqtt %v / %v; broker %+v", sent, stats["keeper"], stats2["keeper"], stats["mqtt"], stats2["mqtt"], f.Broker.Stats())
}
