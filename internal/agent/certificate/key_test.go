package certificate_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/tokensvc/tokensvc/internal/agent/certificate"
	"github.com/tokensvc/tokensvc/internal/agent/credential"
)

func TestLoadOrCreateKey(t *testing.T) {
	tests := []struct {
		typ  certificate.KeyType
		want func(any) bool
	}{
		{certificate.ECDSAP256, func(k any) bool { e, ok := k.(*ecdsa.PrivateKey); return ok && e.Curve == elliptic.P256() }},
		{certificate.ECDSAP384, func(k any) bool { e, ok := k.(*ecdsa.PrivateKey); return ok && e.Curve == elliptic.P384() }},
		{certificate.RSA2048, func(k any) bool { r, ok := k.(*rsa.PrivateKey); return ok && r.N.BitLen() == 2048 }},
	}
	for _, tc := range tests {
		t.Run(string(tc.typ), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "sub", "device.key")
			k, created, err := certificate.LoadOrCreateKey(path, tc.typ)
			if err != nil || !created || !tc.want(k) {
				t.Fatalf("got %T created %v err %v, want a new %s key", k, created, err, tc.typ)
			}
			fi, err := os.Stat(path)
			if err != nil || fi.Mode().Perm() != 0o600 {
				t.Fatalf("key file mode: %v %v, want 0600", fi.Mode().Perm(), err)
			}
			// Renewals and restarts reuse it, whatever type is asked for then.
			again, created, err := certificate.LoadOrCreateKey(path, certificate.ECDSAP384)
			if err != nil || created || certificate.Fingerprint(again.Public()) != certificate.Fingerprint(k.Public()) {
				t.Fatalf("second load: created %v err %v, want the same key", created, err)
			}
		})
	}
}

func TestLoadOrCreateKeyRefuses(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.key")
	if _, _, err := certificate.LoadOrCreateKey(good, certificate.ECDSAP256); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(good)
	write := func(name string, data []byte, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	tests := []struct {
		name    string
		path    string
		typ     certificate.KeyType
		wantErr error
	}{
		{"readable by others", write("open.key", b, 0o644), certificate.ECDSAP256, credential.ErrPermissions},
		{"not PEM", write("garbage.key", []byte("not a key"), 0o600), certificate.ECDSAP256, credential.ErrFormat},
		{"a certificate", write("cert.key", []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"), 0o600), certificate.ECDSAP256, credential.ErrFormat},
		{"unknown type", filepath.Join(dir, "new.key"), "dsa-1024", nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := certificate.LoadOrCreateKey(tc.path, tc.typ)
			if err == nil || (tc.wantErr != nil && !errors.Is(err, tc.wantErr)) {
				t.Fatalf("got %v, want %v", err, tc.wantErr)
			}
		})
	}
}

// TestConcurrentCreatesAgreeOnOneKey: two agents starting at once on a device without a
// key (a service manager's restart overlapping a manual run) must end with one key:
// each gets the key that is on disk, never one the other then replaces — or the
// certificates one of them writes no longer match device.key.
func TestConcurrentCreatesAgreeOnOneKey(t *testing.T) {
	path := filepath.Join(t.TempDir(), "device.key")
	const n = 8
	names := make(chan string, n)
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			k, _, err := certificate.LoadOrCreateKey(path, certificate.ECDSAP256)
			if err != nil {
				t.Error(err)
				names <- ""
				return
			}
			names <- certificate.Fingerprint(k.Public())
		})
	}
	wg.Wait()
	close(names)
	onDisk, created, err := certificate.LoadOrCreateKey(path, certificate.ECDSAP256)
	if err != nil || created {
		t.Fatalf("reload: created %v, %v", created, err)
	}
	want := certificate.Fingerprint(onDisk.Public())
	for got := range names {
		if got != want {
			t.Errorf("an agent holds key %s, the file has %s", got, want)
		}
	}
}
