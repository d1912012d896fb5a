package app_test

import (
	"io"
	"net/http"
	"os"
	"strings"
	"testing"

	"github.com/tokensvc/tokensvc/internal/apptest"
	"github.com/tokensvc/tokensvc/internal/oapi"
)

// TestAuditRecordLost: an audit sink that cannot be written (here /dev/full, a real
// "no space left on device") loses records, and each loss is counted in
// tokensvc_audit_records_lost_total and logged — without the request's secrets —
// while the operation itself still succeeds.
func TestAuditRecordLost(t *testing.T) {
	full, err := os.OpenFile("/dev/full", os.O_WRONLY, 0)
	if err != nil {
		t.Skipf("no /dev/full: %v", err)
	}
	defer full.Close()
	svc := apptest.Start(t, apptest.Options{Stdout: full})
	apptest.PostHub(t, svc.Admin, oapi.HubCreate{Name: "lost", Kind: oapi.Iothub, Hostname: "lost.azure-devices.net"})
	dev := svc.CreateDevice(oapi.DeviceCreate{DeviceId: "lost-1", Hub: "lost", Auth: oapi.CredentialCreate{Type: oapi.Hs256}})

	resp, err := svc.HTTPClient.Get(svc.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/metrics: %s", resp.Status)
	}
	var lost string
	for line := range strings.Lines(string(body)) {
		if v, ok := strings.CutPrefix(line, "tokensvc_audit_records_lost_total "); ok {
			lost = strings.TrimSpace(v)
		}
	}
	if lost != "2" {
		t.Errorf("tokensvc_audit_records_lost_total: got %q, want 2 (the hub and the device creation)", lost)
	}
	logs := svc.Logs.String()
	if n := strings.Count(logs, `"msg":"audit record lost"`); n != 2 {
		t.Errorf("audit record lost logged %d times, want 2", n)
	}
	if !strings.Contains(logs, "no space left on device") {
		t.Error("the log does not say why the record was lost")
	}
	for _, secret := range []string{apptest.AdminToken, deref(dev.PrimaryKey), deref(dev.Auth.Secret)} {
		if secret != "" && strings.Contains(logs, secret) {
			t.Errorf("the log holds a secret (%.6s…)", secret)
		}
	}
}
