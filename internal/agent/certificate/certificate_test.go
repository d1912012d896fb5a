package certificate_test

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tokensvc/tokensvc/internal/agent/certificate"
	"github.com/tokensvc/tokensvc/internal/agent/fetch"
	"github.com/tokensvc/tokensvc/internal/agent/persist"
	"github.com/tokensvc/tokensvc/internal/agent/testpeer"
	"github.com/tokensvc/tokensvc/internal/oapi"
	"github.com/tokensvc/tokensvc/internal/testca"
)

// answering is a service that signs whatever it is told to, for the failures the real
// service cannot produce on demand (a certificate for another key).
type answering struct{ cert *testca.Cert }

func (a answering) Certificate(context.Context, string) (oapi.CertificateResponse, time.Time, error) {
	now := time.Now()
	return oapi.CertificateResponse{Certificate: string(a.cert.CertPEM()), SerialNumber: a.cert.Cert.SerialNumber.Text(16),
		ServerTime: now, ExpiresAt: now.Add(time.Hour), RefreshAfter: now.Add(48 * time.Minute), Hub: "aws", Kind: oapi.Awsiot}, now, nil
}

func (answering) CertificateKey() string { return "test" }

func TestFetchRefusesACertificateForAnotherKey(t *testing.T) {
	dir := t.TempDir()
	ca := testca.NewCA(t, "hub CA")
	f, err := certificate.New(certificate.Options{Client: answering{ca.Issue(t, testca.Spec{CommonName: "thing-1"})},
		KeyFile: filepath.Join(dir, "device.key"), DeviceID: "thing-1"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = f.Fetch(t.Context())
	var fe *fetch.Error
	if !errors.As(err, &fe) || !errors.Is(err, fetch.ErrUnavailable) || !strings.Contains(fe.Detail, certificate.ErrMismatch.Error()) {
		t.Fatalf("got %v, want an ErrUnavailable naming %v", err, certificate.ErrMismatch)
	}
}

func TestSavedCertificateForAnotherKeyIsNotReused(t *testing.T) {
	dir := t.TempDir()
	ca := testca.NewCA(t, "hub CA")
	store, err := persist.New(filepath.Join(dir, "certificate.json"))
	if err != nil {
		t.Fatal(err)
	}
	// A certificate kept for the old key, then the key file is replaced (a new key).
	old := ca.Issue(t, testca.Spec{CommonName: "thing-1"})
	keyFile := old.WriteKey(t, filepath.Join(dir, "device.key"))
	f, err := certificate.New(certificate.Options{Client: answering{old}, KeyFile: keyFile, DeviceID: "thing-1"})
	if err != nil {
		t.Fatal(err)
	}
	tok, err := f.Fetch(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Saved(store).Save(tok); err != nil {
		t.Fatal(err)
	}
	if got, err := f.Saved(store).Load(); err != nil || got.Certificate.Pair == nil || got.Key != f.Key() {
		t.Fatalf("load with the same key: %v, pair %v", err, got.Certificate)
	}
	ca.Issue(t, testca.Spec{CommonName: "thing-1"}).WriteKey(t, keyFile)
	g, err := certificate.New(certificate.Options{Client: answering{old}, KeyFile: keyFile, DeviceID: "thing-1"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := g.Saved(store).Load(); !errors.Is(err, certificate.ErrMismatch) {
		t.Fatalf("load after the key changed: got %v, want %v", err, certificate.ErrMismatch)
	}
	if g.Key() == f.Key() {
		t.Fatal("the keeper key does not change with the device key")
	}
}

// TestDisabledDeviceGetsNoRenewal: once the operator disables the device, the next
// renewal is refused (the keeper keeps the current certificate until it expires and
// retries on its backoff); enabled again, the device gets certificates again.
func TestDisabledDeviceGetsNoRenewal(t *testing.T) {
	f := testpeer.NewCertFixture(t, "thing-0003", 5*time.Minute)
	cf := f.Certificates(t, t.TempDir())
	if _, err := cf.Fetch(t.Context()); err != nil {
		t.Fatal(err)
	}
	f.Service.Disable(f.DeviceID, true)
	if _, err := cf.Fetch(t.Context()); !errors.Is(err, fetch.ErrRefused) {
		t.Fatalf("disabled: got %v, want %v", err, fetch.ErrRefused)
	}
	f.Service.Disable(f.DeviceID, false)
	if _, err := cf.Fetch(t.Context()); err != nil {
		t.Fatalf("enabled again: %v", err)
	}
}

// TestCertificateRequestsLikeTokenFetches: POST /token/certificate goes through the
// token fetch's machinery — a 503 with Retry-After while the key store is down is
// ErrUnavailable carrying it, and a device clock three hours off is refused once (401)
// and then corrected (nonce) without the caller seeing it.
func TestCertificateRequestsLikeTokenFetches(t *testing.T) {
	f := testpeer.NewCertFixture(t, "thing-0004", 5*time.Minute)
	dir := t.TempDir()
	cf := f.Certificates(t, dir)
	f.Service.SetUnavailable(true)
	_, err := cf.Fetch(t.Context())
	f.Service.SetUnavailable(false)
	var fe *fetch.Error
	if !errors.As(err, &fe) || !errors.Is(err, fetch.ErrUnavailable) || fe.Status != 503 || fe.RetryAfter <= 0 {
		t.Fatalf("while the store is down: got %v, want ErrUnavailable 503 with Retry-After", err)
	}

	skewed := f.Client(t, func(o *fetch.Options) { o.Now = func() time.Time { return time.Now().Add(-3 * time.Hour) } })
	cs, err := certificate.New(certificate.Options{Client: skewed, KeyFile: certificate.KeyFileIn(dir), DeviceID: f.DeviceID})
	if err != nil {
		t.Fatal(err)
	}
	tok, err := cs.Fetch(t.Context())
	if err != nil {
		t.Fatalf("with the clock 3 h behind: %v", err)
	}
	if off := skewed.Offset(); off < 3*time.Hour-time.Minute || off > 3*time.Hour+time.Minute {
		t.Errorf("learned clock offset %v, want about 3h", off)
	}
	if tok.Certificate == nil || tok.Certificate.Pair == nil {
		t.Fatal("no certificate")
	}
}
