package issuerkeys_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"log/slog"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/tokensvc/tokensvc/internal/domain"
	"github.com/tokensvc/tokensvc/internal/issuerkeys"
	"github.com/tokensvc/tokensvc/internal/store"
	"github.com/tokensvc/tokensvc/internal/store/filestore"
	"github.com/tokensvc/tokensvc/internal/testclock"
)

const issuerURL = "https://tokens.example.com"

func newClock() *testclock.Clock { return testclock.New(time.Date(2026, 12, 5, 9, 0, 0, 0, time.UTC)) }

// newRing is a ring with the default configuration on a fresh embedded store, and the
// clock it reads.
func newRing(t *testing.T) (*issuerkeys.Ring, *testclock.Clock) {
	t.Helper()
	st, _ := mustFileStore(t)
	c := newClock()
	return mustRing(t, st, c, issuerkeys.Config{}), c
}

// mustFileStore opens a real embedded store in a temporary directory.
func mustFileStore(tb testing.TB) (*filestore.Store, string) {
	tb.Helper()
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	path := filepath.Join(tb.TempDir(), "tokensvc.db")
	st, err := filestore.Open(path, key)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = st.Close() })
	return st, path
}

func mustRing(tb testing.TB, st issuerkeys.Settings, c *testclock.Clock, cfg issuerkeys.Config, opts ...issuerkeys.Option) *issuerkeys.Ring {
	tb.Helper()
	if cfg.Issuer == "" {
		cfg.Issuer = issuerURL
	}
	r, err := issuerkeys.New(st, issuerkeys.Local(), cfg, append([]issuerkeys.Option{issuerkeys.WithClock(c.Now), issuerkeys.WithLogger(slog.New(slog.DiscardHandler))}, opts...)...)
	if err != nil {
		tb.Fatal(err)
	}
	return r
}

func keyByID(tb testing.TB, r *issuerkeys.Ring, kid string) domain.IssuerKey {
	tb.Helper()
	keys, _, err := r.Keys(context.Background())
	if err != nil {
		tb.Fatal(err)
	}
	for _, k := range keys {
		if k.ID == kid {
			return k
		}
	}
	tb.Fatalf("key %q not in the ring", kid)
	return domain.IssuerKey{}
}

// verify checks tok with golang-jwt against the ring's published key named by its kid.
func verify(tb testing.TB, r *issuerkeys.Ring, tok, alg string, now time.Time) jwt.MapClaims {
	tb.Helper()
	claims := jwt.MapClaims{}
	_, err := jwt.ParseWithClaims(tok, claims, func(t *jwt.Token) (any, error) {
		if t.Header["typ"] != "JWT" {
			return nil, errors.New("typ is not JWT")
		}
		kid, _ := t.Header["kid"].(string)
		k := keyByID(tb, r, kid)
		if !k.Published(now) {
			return nil, errors.New("key not published")
		}
		return k.Public, nil
	}, jwt.WithValidMethods([]string{alg}), jwt.WithTimeFunc(func() time.Time { return now }), jwt.WithIssuer(issuerURL))
	if err != nil {
		tb.Fatalf("token does not verify: %v", err)
	}
	return claims
}

func TestFirstKeySignsAtOnce(t *testing.T) {
	for _, tc := range []struct {
		alg    string
		sigLen int
	}{{"ES256", 64}, {"RS256", 256}} {
		t.Run(tc.alg, func(t *testing.T) {
			r, c := newRing(t)
			claims := map[string]any{"iss": issuerURL, "sub": "dev-1", "exp": c.Now().Add(time.Hour).Unix()}
			tok, kid, err := r.SignJWT(t.Context(), tc.alg, claims)
			if err != nil {
				t.Fatal(err)
			}
			got := verify(t, r, tok, tc.alg, c.Now())
			if got["sub"] != "dev-1" {
				t.Errorf("sub = %v, want dev-1", got["sub"])
			}
			parts := strings.Split(tok, ".")
			var hdr map[string]string
			hb, _ := base64.RawURLEncoding.DecodeString(parts[0])
			if err := json.Unmarshal(hb, &hdr); err != nil {
				t.Fatal(err)
			}
			if hdr["alg"] != tc.alg || hdr["typ"] != "JWT" || hdr["kid"] != kid {
				t.Errorf("header = %v, want alg %s, typ JWT, kid %s", hdr, tc.alg, kid)
			}
			sig, err := base64.RawURLEncoding.DecodeString(parts[2])
			if err != nil || len(sig) != tc.sigLen {
				t.Errorf("signature: %d bytes (%v), want %d", len(sig), err, tc.sigLen)
			}
			k := keyByID(t, r, kid)
			if k.State(c.Now()) != domain.KeyActive || !k.SignsFrom.Equal(c.Now()) || k.Transit {
				t.Errorf("first key = %+v, want active from now, not Transit", k)
			}
			// A second token is signed by the same key.
			if _, kid2, err := r.SignJWT(t.Context(), tc.alg, claims); err != nil || kid2 != kid {
				t.Errorf("second token: kid %q (%v), want %q", kid2, err, kid)
			}
		})
	}
}

func TestRotationSchedule(t *testing.T) {
	st, _ := mustFileStore(t)
	c := newClock()
	const lead = 10 * time.Minute
	r := mustRing(t, st, c, issuerkeys.Config{Lead: lead, MaxLifetime: 2 * time.Hour})
	ctx := t.Context()
	claims := func() map[string]any {
		return map[string]any{"iss": issuerURL, "exp": c.Now().Add(2 * time.Hour).Unix()}
	}
	old, oldKid, err := r.SignJWT(ctx, "ES256", claims())
	if err != nil {
		t.Fatal(err)
	}
	c.Advance(time.Minute)
	k2, err := r.Rotate(ctx, domain.AlgES256)
	if err != nil {
		t.Fatal(err)
	}
	rotatedAt := c.Now()
	if !k2.SignsFrom.Equal(rotatedAt.Add(lead)) || k2.State(rotatedAt) != domain.KeyPending || !k2.Published(rotatedAt) {
		t.Fatalf("new key = %+v, want pending and published, signing from %v", k2, rotatedAt.Add(lead))
	}
	if k2.ID == oldKid {
		t.Fatal("rotation reused the kid")
	}
	// Published before it signs: the old key still signs during the lead.
	c.Advance(lead - time.Second)
	if _, kid, err := r.SignJWT(ctx, "ES256", claims()); err != nil || kid != oldKid {
		t.Fatalf("during the lead: kid %q (%v), want the old %q", kid, err, oldKid)
	}
	c.Advance(time.Second)
	tok, kid, err := r.SignJWT(ctx, "ES256", claims())
	if err != nil || kid != k2.ID {
		t.Fatalf("after the lead: kid %q (%v), want the new %q", kid, err, k2.ID)
	}
	verify(t, r, tok, "ES256", c.Now())

	retired := keyByID(t, r, oldKid)
	wantUntil := k2.SignsFrom.Add(2*time.Hour + issuerkeys.SkewMargin)
	if !retired.RetiredAt.Equal(k2.SignsFrom) || !retired.PublishedUntil.Equal(wantUntil) {
		t.Errorf("retired key: retiredAt %v publishedUntil %v, want %v and %v", retired.RetiredAt, retired.PublishedUntil, k2.SignsFrom, wantUntil)
	}
	// A credential the old key signed just before retiring still verifies until it
	// expires, because its key stays published.
	c.Advance(2*time.Hour - time.Minute)
	if st := retired.State(c.Now()); st != domain.KeyRetired {
		t.Errorf("old key state %s, want retired", st)
	}
	verify(t, r, old, "ES256", c.Now().Add(-time.Hour)) // signed an hour before, valid then
	if !retired.Published(c.Now()) {
		t.Error("old key unpublished while credentials it signed are valid")
	}
	c.Advance(time.Minute + issuerkeys.SkewMargin)
	if retired.Published(c.Now()) {
		t.Error("old key still published after publishedUntil")
	}
}

func TestRotateWithNoKeySignsAtOnce(t *testing.T) {
	r, c := newRing(t)
	k, err := r.Rotate(t.Context(), domain.AlgRS256)
	if err != nil {
		t.Fatal(err)
	}
	if k.State(c.Now()) != domain.KeyActive {
		t.Errorf("first RS256 key state %s, want active", k.State(c.Now()))
	}
	if _, kid, err := r.SignJWT(t.Context(), "RS256", map[string]any{}); err != nil || kid != k.ID {
		t.Errorf("signed with %q (%v), want %q", kid, err, k.ID)
	}
}

func TestKidsAreUnique(t *testing.T) {
	r, c := newRing(t)
	seen := map[string]bool{}
	for i := range 6 {
		alg := []domain.IssuerAlg{domain.AlgES256, domain.AlgRS256}[i%2]
		k, err := r.Rotate(t.Context(), alg)
		if err != nil {
			t.Fatal(err)
		}
		if seen[k.ID] {
			t.Fatalf("kid %q issued twice", k.ID)
		}
		seen[k.ID] = true
		c.Advance(time.Minute)
	}
	keys, _, _ := r.Keys(t.Context())
	if len(keys) != 6 {
		t.Errorf("ring holds %d keys, want 6", len(keys))
	}
	for i := 1; i < len(keys); i++ {
		if keys[i].CreatedAt.After(keys[i-1].CreatedAt) {
			t.Errorf("keys not newest first: %v after %v", keys[i].CreatedAt, keys[i-1].CreatedAt)
		}
	}
}

func TestSignPKCS1(t *testing.T) {
	r, _ := newRing(t)
	tok, kid, err := r.SignJWT(t.Context(), "RS256", map[string]any{"sub": "d"})
	if err != nil {
		t.Fatal(err)
	}
	sig, err := r.SignPKCS1(t.Context(), kid, []byte(tok))
	if err != nil {
		t.Fatal(err)
	}
	pub := keyByID(t, r, kid).Public.(*rsa.PublicKey)
	sum := sha256.Sum256([]byte(tok))
	if err := rsa.VerifyPKCS1v15(pub, crypto.SHA256, sum[:], sig); err != nil {
		t.Errorf("PKCS#1 signature does not verify: %v", err)
	}
	_, esKid, err := r.SignJWT(t.Context(), "ES256", map[string]any{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.SignPKCS1(t.Context(), esKid, []byte("x")); err == nil {
		t.Error("SignPKCS1 with an ECDSA key succeeded")
	}
	if _, err := r.SignPKCS1(t.Context(), "rs256-unknown", []byte("x")); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("unknown kid: got %v, want store.ErrNotFound", err)
	}
}

func TestBadInput(t *testing.T) {
	st, _ := mustFileStore(t)
	c := newClock()
	r := mustRing(t, st, c, issuerkeys.Config{})
	tests := []struct {
		name string
		run  func() error
		want error
	}{
		{"sign HS256", func() error { _, _, err := r.SignJWT(t.Context(), "HS256", map[string]any{}); return err }, domain.ErrInvalid},
		{"rotate none", func() error { _, err := r.Rotate(t.Context(), "none"); return err }, domain.ErrInvalid},
		{"claims not an object", func() error { _, _, err := r.SignJWT(t.Context(), "ES256", []int{1}); return err }, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.run()
			if err == nil || (tc.want != nil && !errors.Is(err, tc.want)) {
				t.Errorf("got %v, want an error wrapping %v", err, tc.want)
			}
		})
	}
	noIss, err := issuerkeys.New(st, issuerkeys.Local(), issuerkeys.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := noIss.SignJWT(t.Context(), "ES256", map[string]any{}); !errors.Is(err, issuerkeys.ErrNoIssuer) {
		t.Errorf("no issuer URL: got %v, want ErrNoIssuer", err)
	}
	if _, err := issuerkeys.New(st, issuerkeys.Local(), issuerkeys.Config{Lead: issuerkeys.JWKSMaxAge}); err == nil {
		t.Error("a lead no longer than the JWKS max-age was accepted")
	}
}

type hubList []domain.Hub

func (h hubList) ListHubs(context.Context) ([]domain.Hub, error) { return h, nil }

func TestPublicationCoversTheLongestHubLifetime(t *testing.T) {
	st, _ := mustFileStore(t)
	c := newClock()
	hubs := hubList{{Name: "a", MaxTTL: time.Hour}, {Name: "b", MaxTTL: 72 * time.Hour}}
	r := mustRing(t, st, c, issuerkeys.Config{MaxLifetime: 24 * time.Hour}, issuerkeys.WithHubs(hubs))
	_, kid, err := r.SignJWT(t.Context(), "ES256", map[string]any{})
	if err != nil {
		t.Fatal(err)
	}
	k2, err := r.Rotate(t.Context(), domain.AlgES256)
	if err != nil {
		t.Fatal(err)
	}
	old := keyByID(t, r, kid)
	if want := k2.SignsFrom.Add(72*time.Hour + issuerkeys.SkewMargin); !old.PublishedUntil.Equal(want) {
		t.Errorf("publishedUntil %v, want %v (hub b's 72h)", old.PublishedUntil, want)
	}
}

func TestCertificate(t *testing.T) {
	r, c := newRing(t)
	for _, alg := range []domain.IssuerAlg{domain.AlgES256, domain.AlgRS256} {
		k, err := r.Rotate(t.Context(), alg)
		if err != nil {
			t.Fatal(err)
		}
		cert, err := x509.ParseCertificate(k.Certificate)
		if err != nil {
			t.Fatal(err)
		}
		if err := cert.CheckSignature(cert.SignatureAlgorithm, cert.RawTBSCertificate, cert.Signature); err != nil {
			t.Errorf("%s: certificate is not self-signed: %v", alg, err)
		}
		if eq, ok := cert.PublicKey.(interface{ Equal(crypto.PublicKey) bool }); !ok || !eq.Equal(k.Public) {
			t.Errorf("%s: certificate holds another key", alg)
		}
		if cert.Subject.CommonName != "tokens.example.com" || cert.KeyUsage != x509.KeyUsageDigitalSignature {
			t.Errorf("%s: CN %q usage %v", alg, cert.Subject.CommonName, cert.KeyUsage)
		}
		if cert.NotBefore.After(c.Now()) || cert.NotAfter.Before(c.Now().AddDate(9, 0, 0)) {
			t.Errorf("%s: validity %v..%v", alg, cert.NotBefore, cert.NotAfter)
		}
	}
}

// TestReplicasShareTheRing: a second ring over the same store (another replica, or
// the service after a restart) signs with the stored key, adopts a first key another
// replica created, and sees a rotation after a reload.
func TestReplicasShareTheRing(t *testing.T) {
	st, _ := mustFileStore(t)
	c := newClock()
	a := mustRing(t, st, c, issuerkeys.Config{})
	b := mustRing(t, st, c, issuerkeys.Config{Refresh: 50 * time.Millisecond})
	if _, _, err := b.Keys(t.Context()); err != nil { // b loads the empty ring
		t.Fatal(err)
	}
	_, kidA, err := a.SignJWT(t.Context(), "ES256", map[string]any{})
	if err != nil {
		t.Fatal(err)
	}
	tok, kidB, err := b.SignJWT(t.Context(), "ES256", map[string]any{"iss": issuerURL})
	if err != nil || kidB != kidA {
		t.Fatalf("replica b signed with %q (%v), want a's first key %q", kidB, err, kidA)
	}
	verify(t, a, tok, "ES256", c.Now()) // a's private key restored from the store by b
	k2, err := a.Rotate(t.Context(), domain.AlgES256)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error)
	go func() { done <- b.Run(ctx) }()
	// Run reloads on its own ticker (real time); poll until b has the key.
	deadline := time.Now().Add(10 * time.Second)
	has := func() bool {
		keys, _, _ := b.Keys(t.Context())
		return slices.ContainsFunc(keys, func(k domain.IssuerKey) bool { return k.ID == k2.ID })
	}
	for !has() && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if keyByID(t, b, k2.ID).SignsFrom != k2.SignsFrom {
		t.Error("replica b does not have the rotated key's schedule")
	}
}

// TestPrivateKeyEncryptedAtRest: the local backend's private keys are in the ring
// setting, and the embedded store's file holds them only encrypted.
func TestPrivateKeyEncryptedAtRest(t *testing.T) {
	st, path := mustFileStore(t)
	c := newClock()
	r := mustRing(t, st, c, issuerkeys.Config{})
	for _, alg := range []string{"ES256", "RS256"} {
		if _, _, err := r.SignJWT(t.Context(), alg, map[string]any{}); err != nil {
			t.Fatal(err)
		}
	}
	raw, err := st.GetSetting(t.Context(), issuerkeys.SettingName)
	if err != nil {
		t.Fatal(err)
	}
	var ring struct {
		Keys []struct {
			Private []byte `json:"private"`
		} `json:"keys"`
	}
	if err := json.Unmarshal(raw, &ring); err != nil || len(ring.Keys) != 2 {
		t.Fatalf("setting: %v, %d keys", err, len(ring.Keys))
	}
	if err := st.Close(); err != nil { // flush everything to the file
		t.Fatal(err)
	}
	file, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range ring.Keys {
		if len(k.Private) == 0 {
			t.Fatal("local key without private material")
		}
		for _, needle := range [][]byte{k.Private[len(k.Private)-48:], []byte(base64.StdEncoding.EncodeToString(k.Private)[40:100])} {
			if bytes.Contains(file, needle) {
				t.Error("the data file holds an issuer private key in clear")
			}
		}
	}
	if bytes.Contains(file, []byte("PRIVATE KEY")) || bytes.Contains(file, []byte(`"private"`)) {
		t.Error("the data file shows private key material in clear")
	}
}

func TestECDSASignatureIsRaw(t *testing.T) {
	st, _ := mustFileStore(t)
	r := mustRing(t, st, newClock(), issuerkeys.Config{})
	for range 20 { // r or s with leading zero bytes must still fill 32 bytes each
		tok, kid, err := r.SignJWT(t.Context(), "ES256", map[string]any{"n": 1})
		if err != nil {
			t.Fatal(err)
		}
		i := strings.LastIndexByte(tok, '.')
		sig, _ := base64.RawURLEncoding.DecodeString(tok[i+1:])
		sum := sha256.Sum256([]byte(tok[:i]))
		pub := keyByID(t, r, kid).Public.(*ecdsa.PublicKey)
		rr, ss := new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])
		if len(sig) != 64 || !ecdsa.Verify(pub, sum[:], rr, ss) {
			t.Fatalf("ES256 signature of %d bytes does not verify as r||s", len(sig))
		}
	}
}

// TestRunCreatesFirstKeys: with an issuer URL, Run creates a key of each algorithm at
// start, so the published set holds them before any device asks. (Without one it
// creates none: tokenctl's test lists an empty ring on a service that runs Run.)
func TestRunCreatesFirstKeys(t *testing.T) {
	st, _ := mustFileStore(t)
	r := mustRing(t, st, newClock(), issuerkeys.Config{})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error)
	go func() { done <- r.Run(ctx) }()
	var keys []domain.IssuerKey
	var err error
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if keys, _, err = r.Keys(t.Context()); err != nil || len(keys) >= 2 {
			break
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err != nil || len(keys) != 2 || keys[0].Alg == keys[1].Alg {
		t.Fatalf("%d keys after Run started (%v), want one per algorithm", len(keys), err)
	}
	for _, k := range keys {
		if _, kid, err := r.SignJWT(t.Context(), string(k.Alg), map[string]any{}); err != nil || kid != k.ID {
			t.Errorf("%s signs with %q (%v), want the key Run created, %q", k.Alg, kid, err, k.ID)
		}
	}
}

// TestExpiredKeysArePruned: a key unpublished for 30 days leaves the ring at the next
// write; one still within that stays listed (not published).
func TestExpiredKeysArePruned(t *testing.T) {
	st, _ := mustFileStore(t)
	c := newClock()
	r := mustRing(t, st, c, issuerkeys.Config{MaxLifetime: time.Hour})
	k1, err := r.Rotate(t.Context(), domain.AlgES256)
	if err != nil {
		t.Fatal(err)
	}
	k2, err := r.Rotate(t.Context(), domain.AlgES256)
	if err != nil {
		t.Fatal(err)
	}
	old := keyByID(t, r, k1.ID)
	c.Set(old.PublishedUntil.Add(29 * 24 * time.Hour))
	if _, err := r.Rotate(t.Context(), domain.AlgES256); err != nil {
		t.Fatal(err)
	}
	if k := keyByID(t, r, k1.ID); k.Published(c.Now()) {
		t.Error("an expired key is published")
	}
	c.Set(old.PublishedUntil.Add(31 * 24 * time.Hour))
	if _, err := r.Rotate(t.Context(), domain.AlgES256); err != nil {
		t.Fatal(err)
	}
	keys, _, _ := r.Keys(t.Context())
	for _, k := range keys {
		if k.ID == k1.ID {
			t.Error("a key unpublished for 31 days is still in the ring")
		}
	}
	if len(keys) != 3 || !slices.ContainsFunc(keys, func(k domain.IssuerKey) bool { return k.ID == k2.ID }) {
		t.Errorf("ring holds %d keys, want k2 and the two later ones", len(keys))
	}
}

// staleRead serves one stale read of the ring when armed: the read a replica made just
// before another replica's write landed, which the store's lack of check-and-set lets
// happen (a fake: two real writers cannot be made to interleave so on demand).
type staleRead struct {
	issuerkeys.Settings
	mu    sync.Mutex
	armed bool
}

func (s *staleRead) GetSetting(ctx context.Context, name string) ([]byte, error) {
	s.mu.Lock()
	armed := s.armed
	s.armed = false
	s.mu.Unlock()
	if armed {
		return nil, store.ErrNotFound // the ring as it was before a's first key
	}
	return s.Settings.GetSetting(ctx, name)
}

// TestLostWriteKeyIsWrittenBack: replicas a and b create their first ES256 key at the
// same moment and b's write replaces a's, which a has already signed with. a must write
// its key back rather than drop it — at its next reload, or at its next write (here a
// rotation) — so the credential it signed still verifies against the key set of either
// replica.
func TestLostWriteKeyIsWrittenBack(t *testing.T) {
	for _, next := range []string{"reload", "rotate"} {
		t.Run(next, func(t *testing.T) {
			st, _ := mustFileStore(t)
			c := newClock()
			a := mustRing(t, st, c, issuerkeys.Config{Refresh: 50 * time.Millisecond})
			bst := &staleRead{Settings: st}
			b := mustRing(t, bst, c, issuerkeys.Config{Refresh: 50 * time.Millisecond})
			if _, _, err := b.Keys(t.Context()); err != nil { // b loads the empty ring
				t.Fatal(err)
			}
			tokA, kidA, err := a.SignJWT(t.Context(), "ES256", map[string]any{"iss": issuerURL})
			if err != nil {
				t.Fatal(err)
			}
			bst.mu.Lock()
			bst.armed = true // b's write reads the ring as it was before a's write
			bst.mu.Unlock()
			_, kidB, err := b.SignJWT(t.Context(), "ES256", map[string]any{"iss": issuerURL})
			if err != nil || kidB == kidA {
				t.Fatalf("replica b signed with %q (%v), want a key of its own (the lost-write race)", kidB, err)
			}
			if next == "rotate" {
				if _, err := a.Rotate(t.Context(), domain.AlgES256); err != nil {
					t.Fatal(err)
				}
			}

			ctx, cancel := context.WithCancel(t.Context())
			var wg sync.WaitGroup
			for _, r := range []*issuerkeys.Ring{a, b} {
				wg.Go(func() { _ = r.Run(ctx) })
			}
			// Run reloads on its own ticker (real time): poll until each replica holds both keys.
			holds := func(r *issuerkeys.Ring, kid string) bool {
				keys, _, _ := r.Keys(t.Context())
				return slices.ContainsFunc(keys, func(k domain.IssuerKey) bool { return k.ID == kid && k.Published(c.Now()) })
			}
			deadline := time.Now().Add(10 * time.Second)
			for !(holds(a, kidA) && holds(a, kidB) && holds(b, kidA)) && time.Now().Before(deadline) {
				time.Sleep(20 * time.Millisecond)
			}
			cancel()
			wg.Wait()
			for name, r := range map[string]*issuerkeys.Ring{"a": a, "b": b} {
				if !holds(r, kidA) {
					t.Fatalf("replica %s no longer publishes %s, which a signed with", name, kidA)
				}
				verify(t, r, tokA, "ES256", c.Now())
			}
			if !holds(a, kidB) {
				t.Errorf("replica a does not publish b's key %s", kidB)
			}
		})
	}
}
