package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tokensvc/tokensvc/internal/app"
	"github.com/tokensvc/tokensvc/internal/apptest"
	"github.com/tokensvc/tokensvc/internal/domain"
	"github.com/tokensvc/tokensvc/internal/store/filestore"
)

const adminToken = "tokenctl-test-admin-token-0123"

// mustServer runs the service, built by app.New as tokensvc builds it, over a real
// embedded store on loopback.
func mustServer(t *testing.T) string {
	t.Helper()
	return apptest.Start(t, apptest.Options{Config: func(c *app.Config) { c.AdminToken = adminToken }}).URL
}

// ctl runs tokenctl with args against url and returns stdout, stderr and the error.
func ctl(t *testing.T, url, token string, args ...string) (string, string, error) {
	t.Helper()
	env := map[string]string{"TOKENSVC_URL": url, "TOKENSVC_ADMIN_TOKEN": token}
	var out, errOut bytes.Buffer
	err := run(t.Context(), args, func(k string) string { return env[k] }, &out, &errOut)
	return out.String(), errOut.String(), err
}

func mustCtl(t *testing.T, url string, args ...string) string {
	t.Helper()
	out, errOut, err := ctl(t, url, adminToken, args...)
	if err != nil {
		t.Fatalf("tokenctl %s: got error %v (stderr %q), want success", strings.Join(args, " "), err, errOut)
	}
	return out
}

func TestTokenctlAgainstRealServer(t *testing.T) {
	url := mustServer(t)
	dir := t.TempDir()

	if out := mustCtl(t, url, "hubs", "add", "main", "-hostname", "contoso-hub.azure-devices.net"); !strings.Contains(out, "main") || !strings.Contains(out, "deviceKey") {
		t.Errorf("hubs add: got %q", out)
	}
	var hubs struct {
		Items []struct{ Name, Hostname string }
	}
	if err := json.Unmarshal([]byte(mustCtl(t, url, "-o", "json", "hubs", "list")), &hubs); err != nil || len(hubs.Items) != 1 || hubs.Items[0].Hostname != "contoso-hub.azure-devices.net" {
		t.Errorf("hubs list -o json: got %+v %v", hubs, err)
	}
	if out := mustCtl(t, url, "hubs", "get", "main"); !strings.HasPrefix(out, "HUB") || !strings.Contains(out, "iothub") {
		t.Errorf("hubs get: got %q", out)
	}
	if out := mustCtl(t, url, "hubs", "add", "x509", "-hostname", "x509-hub.azure-devices.net", "-mode", "certificate"); !strings.Contains(out, "certificate") {
		t.Errorf("hubs add -mode certificate: got %q", out)
	}
	if out := mustCtl(t, url, "hubs", "ca", "x509"); !strings.HasPrefix(out, "-----BEGIN CERTIFICATE-----") {
		t.Errorf("hubs ca: got %q, want the PEM chain", out)
	}

	var created struct {
		PrimaryKey, SecondaryKey string
		Auth                     struct{ Secret string }
	}
	// Flags may follow the ID.
	if err := json.Unmarshal([]byte(mustCtl(t, url, "-o", "json", "devices", "add", "sensor-1", "-hub", "main", "-module", "m1")), &created); err != nil || created.Auth.Secret == "" || created.PrimaryKey == "" {
		t.Fatalf("devices add -o json: got %+v %v, want the secrets", created, err)
	}
	if out := mustCtl(t, url, "devices", "add", "sensor-2", "-hub", "main"); !strings.Contains(out, "secret") {
		t.Errorf("devices add (table): got %q, want the secret row", out)
	}
	certFile := filepath.Join(dir, "device.crt")
	der := []byte("not parsed by tokenctl, only hashed")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	var pinned struct {
		Device struct {
			Auth struct{ Type, CertFingerprint string }
		}
	}
	if err := json.Unmarshal([]byte(mustCtl(t, url, "-o", "json", "devices", "add", "pinned-1", "-hub", "main", "-auth", "x509", "-cert-file", certFile)), &pinned); err != nil ||
		pinned.Device.Auth.Type != "x509" || pinned.Device.Auth.CertFingerprint != domain.CertFingerprint(der) {
		t.Errorf("devices add -auth x509 -cert-file: got %+v %v, want the certificate's fingerprint", pinned, err)
	}
	if out := mustCtl(t, url, "devices", "list"); !strings.Contains(out, "sensor-1") || !strings.Contains(out, "sensor-2") || !strings.Contains(out, "m1") {
		t.Errorf("devices list: got %q", out)
	}
	mustCtl(t, url, "devices", "add", "edge-1", "-hub", "main", "-gateway")
	mustCtl(t, url, "devices", "add", "leaf-1", "-hub", "main", "-parent", "edge-1")
	var children struct {
		Items []struct{ DeviceId, Parent string }
	}
	if err := json.Unmarshal([]byte(mustCtl(t, url, "-o", "json", "devices", "list", "-parent", "edge-1")), &children); err != nil ||
		len(children.Items) != 1 || children.Items[0].DeviceId != "leaf-1" || children.Items[0].Parent != "edge-1" {
		t.Errorf("devices list -parent: got %+v %v, want leaf-1 only", children, err)
	}
	if out := mustCtl(t, url, "devices", "list", "-limit", "1"); strings.Count(out, "\n") != 2 {
		t.Errorf("devices list -limit 1: got %q, want a header and one row", out)
	}

	var rotated struct{ PrimaryKey, SecondaryKey string }
	if err := json.Unmarshal([]byte(mustCtl(t, url, "-o", "json", "devices", "rotate", "sensor-1")), &rotated); err != nil || rotated.PrimaryKey != created.SecondaryKey || rotated.SecondaryKey == "" {
		t.Errorf("devices rotate: got %+v %v, want the old secondary as primary", rotated, err)
	}
	if out := mustCtl(t, url, "devices", "rotate", "sensor-1", "-module", "m1"); !strings.Contains(out, "m1") {
		t.Errorf("devices rotate -module: got %q", out)
	}
	if out := mustCtl(t, url, "devices", "revoke", "sensor-1"); !strings.Contains(out, "sensor-1") || strings.Contains(out, "\t-\t") {
		t.Errorf("devices revoke: got %q", out)
	}
	var got struct{ RevokedAt *time.Time }
	if err := json.Unmarshal([]byte(mustCtl(t, url, "-o", "json", "devices", "get", "sensor-1")), &got); err != nil || got.RevokedAt == nil {
		t.Errorf("devices get after revoke: got %+v %v, want revokedAt", got, err)
	}

	ndjson := filepath.Join(dir, "devices.ndjson")
	os.WriteFile(ndjson, []byte(`{"deviceId":"imp-1","hub":"main","auth":{"type":"hs256"}}`+"\n"), 0o600)
	out, errOut, err := ctl(t, url, adminToken, "devices", "import", ndjson)
	if err != nil || !strings.Contains(out, `"result":"created"`) || !strings.Contains(out, `"secret"`) || !strings.Contains(errOut, "1 created") {
		t.Errorf("devices import: got %v, stdout %q, stderr %q", err, out, errOut)
	}
	csvFile := filepath.Join(dir, "devices.csv")
	os.WriteFile(csvFile, []byte("deviceId,hub,authType\nimp-1,main,hs256\nimp-2,main,hs256\nimp-3,nowhere,hs256\n"), 0o600)
	out, errOut, err = ctl(t, url, adminToken, "devices", "import", csvFile)
	if err == nil || !strings.Contains(errOut, "1 created, 1 skipped, 1 rejected") || !strings.Contains(out, `"result":"rejected"`) {
		t.Errorf("devices import csv: got %v, stdout %q, stderr %q, want an error for the rejected line", err, out, errOut)
	}
}

func TestTokenctlErrors(t *testing.T) {
	url := mustServer(t)
	tests := []struct {
		name    string
		token   string
		args    []string
		wantErr string
	}{
		{"no token", "", []string{"hubs", "list"}, "TOKENSVC_ADMIN_TOKEN"},
		{"wrong token", "wrong-token-0123456789", []string{"hubs", "list"}, "401"},
		{"unknown device", adminToken, []string{"devices", "get", "nobody"}, `404 Not Found: device "nobody": not found`},
		{"bad input from the service", adminToken, []string{"hubs", "add", "h", "-hostname", "x.example", "-kind", "nonsense"}, "400"},
		{"unknown command", adminToken, []string{"devices", "explode"}, "unknown command"},
		{"missing argument", adminToken, []string{"devices", "get"}, "want 1 argument"},
		{"missing hub flag", adminToken, []string{"devices", "add", "d"}, "-hub is required"},
		{"bad output format", adminToken, []string{"-o", "yaml", "hubs", "list"}, "want table or json"},
		{"missing import file", adminToken, []string{"devices", "import", "/nonexistent.ndjson"}, "no such file"},
		{"bad import format", adminToken, []string{"devices", "import", "-format", "xml", "-"}, "want ndjson or csv"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := ctl(t, url, tt.token, tt.args...)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("got error %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}

// TestTokenctlStoreBackup: store backup writes the service's copy to FILE, mode 0600,
// a copy that opens with the service's master key and holds its devices.
func TestTokenctlStoreBackup(t *testing.T) {
	key := make([]byte, filestore.KeySize)
	key[1] = 9
	url := apptest.Start(t, apptest.Options{Config: func(c *app.Config) {
		c.AdminToken, c.MasterKey = adminToken, base64.StdEncoding.EncodeToString(key)
	}}).URL
	mustCtl(t, url, "hubs", "add", "main", "-hostname", "contoso-hub.azure-devices.net")
	mustCtl(t, url, "devices", "add", "sensor-1", "-hub", "main")

	path := filepath.Join(t.TempDir(), "copy.db")
	_, errOut, err := ctl(t, url, adminToken, "store", "backup", path)
	if err != nil {
		t.Fatalf("store backup: %v (stderr %q)", err, errOut)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 || !strings.Contains(errOut, fmt.Sprintf("%d bytes written", fi.Size())) {
		t.Fatalf("the copy: %v, mode %v; stderr %q", err, fi.Mode(), errOut)
	}
	st, err := filestore.Open(path, key)
	if err != nil {
		t.Fatalf("open the copy: %v", err)
	}
	defer st.Close()
	if _, err := st.GetDevice(t.Context(), "sensor-1"); err != nil {
		t.Errorf("the copy lacks sensor-1: %v", err)
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Errorf("the directory holds %d entries, want only the copy (no temporary file left)", len(entries))
	}
}
