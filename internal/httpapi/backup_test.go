package httpapi_test

import (
	"encoding/base64"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/tokensvc/tokensvc/internal/app"
	"github.com/tokensvc/tokensvc/internal/apptest"
	"github.com/tokensvc/tokensvc/internal/oapi"
	"github.com/tokensvc/tokensvc/internal/store/filestore"
)

// TestBackupStore: POST /store/backup streams a copy of the embedded store that opens
// with the service's master key and holds what was written, with its exact length; the
// operator audit records it; without a token it is a 401, and a store without a backup
// (an injected one, as the Vault store has none) is a 400 problem.
func TestBackupStore(t *testing.T) {
	key := make([]byte, filestore.KeySize)
	key[0] = 7
	e := mustEnvWith(t, envOptions{config: func(c *app.Config) { c.MasterKey = base64.StdEncoding.EncodeToString(key) }})
	e.mustHub(oapi.HubCreate{Name: "main", Kind: oapi.Iothub, Hostname: hubHost})
	dev := e.mustDevice(oapi.DeviceCreate{DeviceId: "backed-up-1", Hub: "main", Auth: oapi.CredentialCreate{Type: oapi.Hs256}})

	resp, body := e.rawRequest(http.MethodPost, "/store/backup", adminToken, "", nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("backup: %d %s", resp.StatusCode, body)
	}
	if got := resp.Header.Get("Content-Length"); got != strconv.Itoa(len(body)) {
		t.Errorf("Content-Length %q for a %d-byte body", got, len(body))
	}
	if cd := resp.Header.Get("Content-Disposition"); !strings.HasPrefix(cd, `attachment; filename="tokensvc-`) {
		t.Errorf("Content-Disposition %q", cd)
	}
	if secret := *dev.Auth.Secret; strings.Contains(string(body), secret) || strings.Contains(string(body), *dev.PrimaryKey) {
		t.Error("the copy holds a device secret in clear")
	}
	path := filepath.Join(t.TempDir(), "tokensvc.db")
	if err := os.WriteFile(path, body, 0o600); err != nil {
		t.Fatal(err)
	}
	st, err := filestore.Open(path, key)
	if err != nil {
		t.Fatalf("open the copy with the service's key: %v", err)
	}
	defer st.Close()
	if _, err := st.GetDevice(t.Context(), "backed-up-1"); err != nil {
		t.Errorf("the copy lacks the device: %v", err)
	}
	if !strings.Contains(e.audit.String(), `"backupStore"`) {
		t.Errorf("no audit record of the backup:\n%s", e.audit)
	}

	if resp, body := e.rawRequest(http.MethodPost, "/store/backup", "", "", nil); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("without a token: %d %s", resp.StatusCode, body)
	}

	other := mustEnvWith(t, envOptions{store: apptest.FileStore(t)})
	resp, body = other.rawRequest(http.MethodPost, "/store/backup", adminToken, "", nil)
	if resp.StatusCode != http.StatusBadRequest || resp.Header.Get("Content-Type") != "application/problem+json" ||
		!strings.Contains(string(body), "Vault's own snapshots") {
		t.Errorf("a store without a backup: %d %s %s", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
}
