package httpapi_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/tokensvc/tokensvc/internal/app"
	"github.com/tokensvc/tokensvc/internal/devicecert"
	"github.com/tokensvc/tokensvc/internal/oapi"
	"github.com/tokensvc/tokensvc/internal/store"
	"github.com/tokensvc/tokensvc/internal/testca"
)

// certHubs creates one hub in mode certificate per kind that has the mode, and a
// device with an HS256 credential on each; it returns their secrets by device ID.
func (e *env) certHubs() map[string]string {
	e.t.Helper()
	mode := oapi.Certificate
	e.mustHub(oapi.HubCreate{Name: "aws", Kind: oapi.Awsiot, Hostname: "abc-ats.iot.eu-west-1.amazonaws.com", Mode: &mode})
	e.mustHub(oapi.HubCreate{Name: "azure", Kind: oapi.Iothub, Hostname: "contoso.azure-devices.net", Mode: &mode})
	e.mustHub(oapi.HubCreate{Name: "grid", Kind: oapi.Jwtbroker, Hostname: "ns.westeurope-1.ts.eventgrid.azure.net", Mode: &mode})
	secrets := map[string]string{}
	for _, d := range []struct{ id, hub string }{{"thing-1", "aws"}, {"dev-1", "azure"}, {"client-1", "grid"}} {
		var mods *[]oapi.ModuleCreate
		if d.hub == "azure" {
			mods = &[]oapi.ModuleCreate{{ModuleId: "mod-a"}}
		}
		c := e.mustDevice(oapi.DeviceCreate{DeviceId: d.id, Hub: d.hub, Auth: oapi.CredentialCreate{Type: oapi.Hs256}, Modules: mods})
		secrets[d.id] = *c.Auth.Secret
	}
	return secrets
}

func (e *env) getCertificate(assertion string, body oapi.CertificateRequest, editors ...oapi.RequestEditorFn) *oapi.GetCertificateResponse {
	e.t.Helper()
	resp, err := e.anon.GetCertificateWithResponse(e.t.Context(), body, append([]oapi.RequestEditorFn{bearer(assertion)}, editors...)...)
	if err != nil {
		e.t.Fatal(err)
	}
	return resp
}

func (e *env) hubCA(hub string) *x509.CertPool {
	e.t.Helper()
	resp, err := e.admin.GetHubCAWithResponse(e.t.Context(), hub)
	if err != nil {
		e.t.Fatal(err)
	}
	if resp.StatusCode() != 200 {
		e.t.Fatalf("ca.pem of %s: got %d %s", hub, resp.StatusCode(), resp.Body)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(resp.Body) {
		e.t.Fatalf("ca.pem of %s holds no certificate", hub)
	}
	return pool
}

func TestGetCertificateByKind(t *testing.T) {
	e := mustEnv(t)
	secrets := e.certHubs()
	tests := []struct {
		device, hub, module string
		wantCN              string
		check               func(t *testing.T, r *oapi.CertificateResponse)
	}{
		{device: "thing-1", hub: "aws", wantCN: "thing-1", check: func(t *testing.T, r *oapi.CertificateResponse) {
			m := r.Mqtt
			if m == nil || m.Port != 443 || m.Alpn == nil || strings.Join(*m.Alpn, ",") != "x-amzn-mqtt-ca" || m.ClientId != "thing-1" || m.Username != "" || m.Password != "" {
				t.Errorf("mqtt: got %+v, want port 443, ALPN x-amzn-mqtt-ca, client ID thing-1, no user name or password", m)
			}
			if h := r.Https; h == nil || h.Alpn == nil || (*h.Alpn)[0] != "x-amzn-http-ca" || h.Authorization != nil {
				t.Errorf("https: got %+v, want ALPN x-amzn-http-ca and no Authorization", h)
			}
		}},
		{device: "dev-1", hub: "azure", wantCN: "dev-1", check: func(t *testing.T, r *oapi.CertificateResponse) {
			m := r.Mqtt
			if m == nil || m.Username != "contoso.azure-devices.net/dev-1/?api-version=2021-04-12" || m.Password != "" || m.ClientId != "dev-1" {
				t.Errorf("mqtt: got %+v, want the IoT Hub user name and no password", m)
			}
			if a := r.Amqp; a == nil || a.SaslMechanism != oapi.ANONYMOUS || a.Password != nil {
				t.Errorf("amqp: got %+v, want SASL ANONYMOUS without password", a)
			}
		}},
		{device: "dev-1", hub: "azure", module: "mod-a", wantCN: "dev-1/mod-a", check: func(t *testing.T, r *oapi.CertificateResponse) {
			if r.Mqtt == nil || r.Mqtt.ClientId != "dev-1/mod-a" {
				t.Errorf("mqtt: got %+v, want client ID dev-1/mod-a", r.Mqtt)
			}
		}},
		{device: "client-1", hub: "grid", wantCN: "client-1", check: func(t *testing.T, r *oapi.CertificateResponse) {
			if m := r.Mqtt; m == nil || m.Port != 8883 || m.Username != "client-1" || m.Password != "" || m.AuthMethod != nil {
				t.Errorf("mqtt: got %+v, want port 8883, user name client-1, no password", m)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.hub+"/"+tt.wantCN, func(t *testing.T) {
			key := testca.P256Key(t)
			body := oapi.CertificateRequest{Csr: testca.CSR(t, key, "root", "evil.example.com")}
			if tt.module != "" {
				body.Module = &tt.module
			}
			resp := e.getCertificate(e.hs256(tt.device, secrets[tt.device]), body)
			if resp.JSON200 == nil {
				t.Fatalf("got %d %s, want 200", resp.StatusCode(), resp.Body)
			}
			if cc := resp.HTTPResponse.Header.Get("Cache-Control"); cc != "no-store" {
				t.Errorf("Cache-Control: got %q, want no-store", cc)
			}
			r := resp.JSON200
			block, _ := pem.Decode([]byte(r.Certificate))
			leaf, err := x509.ParseCertificate(block.Bytes)
			if err != nil {
				t.Fatal(err)
			}
			now := e.clock.Now()
			if leaf.Subject.CommonName != tt.wantCN || len(leaf.DNSNames) != 0 || leaf.Subject.String() != "CN="+tt.wantCN {
				t.Errorf("subject: got %q SANs %v, want only CN=%s", leaf.Subject, leaf.DNSNames, tt.wantCN)
			}
			if !leaf.PublicKey.(*ecdsa.PublicKey).Equal(key.Public()) {
				t.Error("the certificate is not for the CSR's key")
			}
			if !leaf.NotAfter.Equal(now.Add(24*time.Hour)) || !leaf.NotBefore.Equal(now.Add(-5*time.Minute)) || r.ExpiresIn != 86400 {
				t.Errorf("validity: got %s to %s (expiresIn %d), want now-5m to now+24h", leaf.NotBefore, leaf.NotAfter, r.ExpiresIn)
			}
			if want := now.Add(24 * time.Hour * 8 / 10); !r.RefreshAfter.Equal(want) {
				t.Errorf("refreshAfter: got %s, want %s", r.RefreshAfter, want)
			}
			if r.SerialNumber != leaf.SerialNumber.Text(16) {
				t.Errorf("serialNumber: got %s, want %s", r.SerialNumber, leaf.SerialNumber.Text(16))
			}
			if _, err := leaf.Verify(x509.VerifyOptions{Roots: e.hubCA(tt.hub), CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
				t.Errorf("does not chain to GET /hubs/%s/ca.pem for client auth: %v", tt.hub, err)
			}
			if !strings.Contains(r.CaCertificates, "BEGIN CERTIFICATE") {
				t.Error("caCertificates holds no certificate")
			}
			tt.check(t, r)
			if !strings.Contains(e.audit.String(), `"serial":"`+r.SerialNumber+`"`) {
				t.Error("the audit log does not name the serial number")
			}
		})
	}
	// Hubs' CAs differ: aws's CA does not verify azure's certificates.
	if e.hubCA("aws").Equal(e.hubCA("azure")) {
		t.Error("two hubs share a CA")
	}
	if strings.Contains(e.audit.String()+e.logBuf.String(), "PRIVATE KEY") || strings.Contains(e.audit.String(), "BEGIN CERTIFICATE") {
		t.Error("a key or certificate reached the audit log or the service log")
	}
}

func TestGetCertificatePlainText(t *testing.T) {
	e := mustEnv(t)
	secrets := e.certHubs()
	resp := e.getCertificate(e.hs256("thing-1", secrets["thing-1"]), oapi.CertificateRequest{Csr: testca.CSR(t, testca.P256Key(t), "x")},
		func(_ context.Context, r *http.Request) error { r.Header.Set("Accept", "text/plain"); return nil })
	if resp.StatusCode() != 200 {
		t.Fatalf("got %d %s", resp.StatusCode(), resp.Body)
	}
	lines := map[string]string{}
	for l := range strings.SplitSeq(strings.TrimSpace(string(resp.Body)), "\n") {
		k, v, _ := strings.Cut(l, "=")
		lines[k] = v
	}
	cert := strings.ReplaceAll(lines["certificate"], `\n`, "\n")
	if b, _ := pem.Decode([]byte(cert)); b == nil || b.Type != "CERTIFICATE" {
		t.Errorf("certificate line: got %q, want PEM with \\n for line breaks", lines["certificate"])
	}
	for k, want := range map[string]string{"mqttAlpn": "x-amzn-mqtt-ca", "mqttPort": "443", "expiresIn": "86400", "mqttClientId": "thing-1", "httpsAlpn": "x-amzn-http-ca"} {
		if lines[k] != want {
			t.Errorf("%s: got %q, want %q", k, lines[k], want)
		}
	}
	if _, ok := lines["mqttPassword"]; ok {
		t.Error("text form carries a password line")
	}
}

// TestGetCertificateRefusals: every refusal is a problem+json naming the problem, and
// nothing is created: no certificate, no audit serial, not even the hub's CA.
func TestGetCertificateRefusals(t *testing.T) {
	// One device asks many times here; its own bucket is not under test.
	e := mustEnvWith(t, envOptions{config: func(c *app.Config) { c.Limits.DeviceBurst = 100 }})
	secrets := e.certHubs()
	e.mustHub(oapi.HubCreate{Name: "tokens", Kind: oapi.Iothub, Hostname: "tokens.azure-devices.net"})
	tok := e.mustDevice(oapi.DeviceCreate{DeviceId: "sas-1", Hub: "tokens", Auth: oapi.CredentialCreate{Type: oapi.Hs256}})
	mode := oapi.Certificate
	keyTypes := []oapi.HubCreateCertificateKeyTypes{"ecdsa-p256"}
	e.mustHub(oapi.HubCreate{Name: "strict", Kind: oapi.Iothub, Hostname: "strict.azure-devices.net", Mode: &mode, CertificateKeyTypes: &keyTypes})
	strict := e.mustDevice(oapi.DeviceCreate{DeviceId: "strict-1", Hub: "strict", Auth: oapi.CredentialCreate{Type: oapi.Hs256}})
	off := e.mustDevice(oapi.DeviceCreate{DeviceId: "off", Hub: "azure", Auth: oapi.CredentialCreate{Type: oapi.Hs256}, Disabled: ptr(true)})
	revoked := e.mustDevice(oapi.DeviceCreate{DeviceId: "revoked", Hub: "azure", Auth: oapi.CredentialCreate{Type: oapi.Hs256}})
	before := e.hs256("revoked", *revoked.Auth.Secret)
	e.clock.Advance(time.Second)
	if r, err := e.admin.RevokeDeviceWithResponse(t.Context(), "revoked"); err != nil || r.StatusCode() != 200 {
		t.Fatalf("revoke: %v %v", err, r)
	}
	rsaKey, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	good := testca.CSR(t, testca.P256Key(t), "x")
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	p224, _ := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	tampered := func() string {
		b, _ := pem.Decode([]byte(good))
		b.Bytes[len(b.Bytes)-1] ^= 1
		return string(pem.EncodeToMemory(b))
	}()
	azure := func() string { return e.hs256("dev-1", secrets["dev-1"]) }
	tests := []struct {
		name       string
		assertion  string
		csr        string
		module     string
		wantStatus int
		wantDetail string
	}{
		{"another device's identity, signed with own secret", mustSign(t, jwt.SigningMethodHS256, e.claims("thing-1"), []byte(secrets["dev-1"])), good, "", 401, ""},
		{"another device's module", azure(), good, "mod-b", 403, ""},
		{"module on a kind without modules", e.hs256("thing-1", secrets["thing-1"]), good, "mod-a", 403, ""},
		{"disabled device", e.hs256("off", *off.Auth.Secret), good, "", 401, ""},
		{"revoked device", before, good, "", 401, ""},
		{"hub in mode deviceKey", e.hs256("sas-1", *tok.Auth.Secret), good, "", 400, "issues tokens (GET /token), not certificates"},
		{"garbage", azure(), "garbage", "", 400, "csr: not a PEM"},
		{"wrong signature", azure(), tampered, "", 400, "proof of possession"},
		{"tiny rsa", azure(), testca.CSR(t, rsaKey, "x"), "", 400, "too small"},
		{"unknown curve", azure(), testca.CSR(t, p224, "x"), "", 400, "P-224"},
		{"key type not on the hub's list", e.hs256("strict-1", *strict.Auth.Secret), testca.CSR(t, p384, "x"), "", 400, "ecdsa-p384 is not accepted"},
		{"oversized csr", azure(), strings.Repeat("A", devicecert.MaxCSRBytes+1), "", 400, "csr"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body := oapi.CertificateRequest{Csr: tt.csr}
			if tt.module != "" {
				body.Module = &tt.module
			}
			resp := e.getCertificate(tt.assertion, body)
			if resp.StatusCode() != tt.wantStatus {
				t.Fatalf("got %d %s, want %d", resp.StatusCode(), resp.Body, tt.wantStatus)
			}
			if ct := resp.HTTPResponse.Header.Get("Content-Type"); ct != "application/problem+json" {
				t.Errorf("Content-Type: got %q, want application/problem+json", ct)
			}
			var p oapi.Problem
			_ = json.Unmarshal(resp.Body, &p)
			if !strings.Contains(deref(p.Detail), tt.wantDetail) {
				t.Errorf("detail: got %q, want it to say %q", deref(p.Detail), tt.wantDetail)
			}
		})
	}
	// A body over the bound is a 413 before anything reads it.
	big := `{"csr":"` + strings.Repeat("A", devicecert.MaxCSRBytes*4) + `"}`
	resp, body := e.rawRequest(http.MethodPost, "/token/certificate", azure(), "application/json", strings.NewReader(big))
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Errorf("oversized body: got %d %s, want 413", resp.StatusCode, body)
	}
	if strings.Contains(e.audit.String(), `"serial"`) || strings.Contains(e.logBuf.String(), "certificate issued") {
		t.Error("a refused request issued a certificate")
	}
	for _, hub := range []string{"aws", "azure", "grid", "strict"} {
		if _, err := e.store.GetSetting(t.Context(), devicecert.SettingPrefix+hub); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("hub %s: a refused request created its CA (%v)", hub, err)
		}
	}
	// A token for a hub in mode certificate is refused the same way.
	if r := e.getToken(azure(), nil); r.StatusCode() != 400 || !strings.Contains(string(r.Body), "POST /token/certificate") {
		t.Errorf("GET /token on a certificate hub: got %d %s, want 400 naming POST /token/certificate", r.StatusCode(), r.Body)
	}
	// ca.pem of a hub not in mode certificate, or of no hub.
	for name, want := range map[string]int{"tokens": 400, "nope": 404} {
		r, err := e.admin.GetHubCAWithResponse(t.Context(), name)
		if err != nil || r.StatusCode() != want {
			t.Errorf("ca.pem of %s: got %v %v, want %d", name, r.StatusCode(), err, want)
		}
	}
}

// TestImportHubCA: an admin replaces a hub's CA with their own; the device's next
// certificate chains to it and ca.pem publishes it. Bad imports are 400s that change
// nothing, and the key reaches no log.
func TestImportHubCA(t *testing.T) {
	e := mustEnv(t)
	secrets := e.certHubs()
	e.mustHub(oapi.HubCreate{Name: "tokens", Kind: oapi.Iothub, Hostname: "tokens.azure-devices.net"})
	mine := testca.SelfSigned(t, testca.Spec{CommonName: "operator device CA", CA: true, At: e.clock.Now()})
	leaf := mine.Issue(t, testca.Spec{CommonName: "not a CA", At: e.clock.Now()})
	other := testca.NewCA(t, "other")
	tests := []struct {
		name, hub  string
		cert, key  []byte
		wantStatus int
	}{
		{"not a CA", "azure", leaf.CertPEM(), leaf.KeyPEM(), 400},
		{"key of another CA", "azure", mine.CertPEM(), other.KeyPEM(), 400},
		{"hub not in mode certificate", "tokens", mine.CertPEM(), mine.KeyPEM(), 400},
		{"no such hub", "nope", mine.CertPEM(), mine.KeyPEM(), 404},
		{"the operator's CA", "azure", mine.CertPEM(), mine.KeyPEM(), 204},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := e.admin.ImportHubCAWithResponse(t.Context(), tt.hub, oapi.HubCAImport{Certificate: string(tt.cert), Key: string(tt.key)})
			if err != nil {
				t.Fatal(err)
			}
			if r.StatusCode() != tt.wantStatus {
				t.Fatalf("got %d %s, want %d", r.StatusCode(), r.Body, tt.wantStatus)
			}
		})
	}
	resp := e.getCertificate(e.hs256("dev-1", secrets["dev-1"]), oapi.CertificateRequest{Csr: testca.CSR(t, testca.P256Key(t), "x")})
	if resp.JSON200 == nil {
		t.Fatalf("certificate after import: %d %s", resp.StatusCode(), resp.Body)
	}
	b, _ := pem.Decode([]byte(resp.JSON200.Certificate))
	got, _ := x509.ParseCertificate(b.Bytes)
	if _, err := got.Verify(x509.VerifyOptions{Roots: testca.Pool(mine), CurrentTime: e.clock.Now(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("the certificate does not chain to the imported CA: %v", err)
	}
	if !e.hubCA("azure").Equal(testca.Pool(mine)) {
		t.Error("ca.pem does not publish the imported CA")
	}
	if strings.Contains(e.audit.String()+e.logBuf.String(), "PRIVATE KEY") {
		t.Error("the imported key reached a log")
	}
}
