package testpeer

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/tokensvc/tokensvc/internal/domain"
	"github.com/tokensvc/tokensvc/internal/oapi"
	"github.com/tokensvc/tokensvc/internal/signer"
)

// Hub is the IoT Hub host name the tests use; HubName is its short name.
const (
	Hub     = "agent-test-hub.azure-devices.net"
	HubName = "agent-test-hub"
)

// Fixture is a running service with one IoT Hub and one HS256 device.
type Fixture struct {
	CA      *CA
	Service *Service
	// DeviceID is the device; SecretFile holds its HS256 secret (0600); Key is its
	// decoded SAS primary key, which only the brokers know.
	DeviceID   string
	Secret     string
	SecretFile string
	Key        []byte
	// CAFile is the CA bundle that verifies the service and the brokers.
	CAFile string
	Dir    string
}

// NewFixture starts the service and provisions hub (Hostname, Kind and name filled in
// when empty) with a device whose tokens live ttl.
func NewFixture(tb testing.TB, deviceID string, ttl time.Duration, hub domain.Hub) *Fixture {
	tb.Helper()
	ca := NewCA(tb, "agent test CA")
	svc := StartService(tb, ca)
	if hub.Name == "" {
		hub.Name = "main"
	}
	if hub.Kind == "" {
		hub.Kind = domain.KindIoTHub
	}
	if hub.Hostname == "" {
		hub.Hostname = Hub
	}
	hub.DefaultTTL, hub.MaxTTL = ttl, ttl
	svc.CreateHub(hub)
	created := svc.CreateDevice(oapi.DeviceCreate{DeviceId: deviceID, Hub: hub.Name, Auth: oapi.CredentialCreate{Type: oapi.Hs256}})
	key, err := signer.DecodeKey(*created.PrimaryKey, signer.KeyBase64)
	if err != nil {
		tb.Fatal(err)
	}
	dir := tb.TempDir()
	f := &Fixture{CA: ca, Service: svc, DeviceID: deviceID, Secret: *created.Auth.Secret, Key: key, Dir: dir}
	f.SecretFile = filepath.Join(dir, "device.secret")
	if err := os.WriteFile(f.SecretFile, []byte(f.Secret+"\n"), 0o600); err != nil {
		tb.Fatal(err)
	}
	f.CAFile = ca.WritePEM(tb, dir)
	return f
}
