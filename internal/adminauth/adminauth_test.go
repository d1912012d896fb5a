package adminauth_test

import (
	"context"
	"crypto/sha256"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/tokensvc/tokensvc/internal/adminauth"
	"github.com/tokensvc/tokensvc/internal/store/filestore"
)

func mustStore(t *testing.T) *filestore.Store {
	t.Helper()
	st, err := filestore.Open(filepath.Join(t.TempDir(), "db"), make([]byte, 32))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func TestBootstrap(t *testing.T) {
	ctx := context.Background()
	st := mustStore(t)

	a, generated, err := adminauth.Bootstrap(ctx, st, "")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(generated, "tsa_") || len(generated) < 40 {
		t.Fatalf("generated token: got %q, want tsa_ and 256 bits", generated)
	}
	stored, err := st.GetSetting(ctx, adminauth.SettingName)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(stored), generated) || len(stored) != 32 {
		t.Errorf("stored setting: got %d bytes, want only a 32-byte hash", len(stored))
	}

	// A second start finds the hash, generates nothing, and accepts the same token.
	again, generated2, err := adminauth.Bootstrap(ctx, st, "")
	if err != nil || generated2 != "" {
		t.Fatalf("second bootstrap: got %q, %v; want no new token", generated2, err)
	}
	explicit, _, err := adminauth.Bootstrap(ctx, st, "operator-chosen-token-1234")
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name  string
		auth  *adminauth.Authenticator
		token string
		want  bool
	}{
		{"generated token", a, generated, true},
		{"generated token after restart", again, generated, true},
		{"explicit token", explicit, "operator-chosen-token-1234", true},
		{"explicit replaces the stored one", explicit, generated, false},
		{"empty", a, "", false},
		{"prefix of the token", a, generated[:len(generated)-1], false},
		{"token plus a byte", a, generated + "x", false},
	}
	for _, tt := range tests {
		if got := tt.auth.Check(tt.token); got != tt.want {
			t.Errorf("%s: got %v, want %v", tt.name, got, tt.want)
		}
	}
}

// An explicit token set after a generated one replaces it in the store: unsetting the
// variable later must not bring back the generated token, which was printed on stdout.
func TestExplicitTokenRetiresTheGeneratedOne(t *testing.T) {
	ctx := context.Background()
	st := mustStore(t)
	_, generated, err := adminauth.Bootstrap(ctx, st, "")
	if err != nil || generated == "" {
		t.Fatalf("first start: got %q, %v; want a generated token", generated, err)
	}
	const explicit = "operator-chosen-token-1234"
	for range 2 { // the second start with the same token finds its hash already stored
		if _, _, err := adminauth.Bootstrap(ctx, st, explicit); err != nil {
			t.Fatal(err)
		}
	}
	unset, again, err := adminauth.Bootstrap(ctx, st, "")
	if err != nil || again != "" {
		t.Fatalf("start with the variable unset: got %q, %v; want no new token", again, err)
	}
	if unset.Check(generated) {
		t.Error("the generated token works again after the explicit one was unset")
	}
	if !unset.Check(explicit) {
		t.Error("the explicit token stopped working when the variable was unset")
	}
}

func TestBootstrapRejectsDamagedHash(t *testing.T) {
	ctx := context.Background()
	st := mustStore(t)
	if err := st.PutSetting(ctx, adminauth.SettingName, []byte("short")); err != nil {
		t.Fatal(err)
	}
	if _, _, err := adminauth.Bootstrap(ctx, st, ""); err == nil {
		t.Fatal("got no error for a 5-byte stored hash, want one")
	}
}

func TestReplaceAndRevoke(t *testing.T) {
	a, _, err := adminauth.Bootstrap(t.Context(), mustStore(t), "first-admin-token-0123456789")
	if err != nil {
		t.Fatal(err)
	}
	if !a.Check("first-admin-token-0123456789") {
		t.Fatal("explicit token refused")
	}
	a.Replace(sha256.Sum256([]byte("second-admin-token-0123456789")))
	if a.Check("first-admin-token-0123456789") || !a.Check("second-admin-token-0123456789") {
		t.Error("after Replace: want only the second token accepted")
	}
	a.Revoke()
	if a.Check("second-admin-token-0123456789") || a.Check("") {
		t.Error("after Revoke: want every token refused")
	}
}

// firstReadsTogether lets the first n GetSetting calls return only once all n have
// read: replicas starting at the same moment all find no admin token hash.
type firstReadsTogether struct {
	adminauth.Settings
	calls   atomic.Int32
	n       int32
	arrived sync.WaitGroup
}

func (s *firstReadsTogether) GetSetting(ctx context.Context, name string) ([]byte, error) {
	v, err := s.Settings.GetSetting(ctx, name)
	if s.calls.Add(1) <= s.n {
		s.arrived.Done()
		s.arrived.Wait()
	}
	return v, err
}

// TestBootstrapReplicasAgree: replicas starting together on one store without an
// explicit token all find none stored; exactly one generates and shows a token, and
// every replica accepts that token and no other.
func TestBootstrapReplicasAgree(t *testing.T) {
	const n = 4
	st := &firstReadsTogether{Settings: mustStore(t), n: n}
	st.arrived.Add(n)
	auths := make([]*adminauth.Authenticator, n)
	shown := make([]string, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			var err error
			auths[i], shown[i], err = adminauth.Bootstrap(context.Background(), st, "")
			if err != nil {
				t.Errorf("replica %d: %v", i, err)
			}
		})
	}
	wg.Wait()
	var token string
	for i, g := range shown {
		if g == "" {
			continue
		}
		if token != "" {
			t.Fatalf("replica %d also showed a generated token", i)
		}
		token = g
	}
	if token == "" {
		t.Fatal("no replica showed a token")
	}
	for i, a := range auths {
		if a == nil {
			continue
		}
		if !a.Check(token) {
			t.Errorf("replica %d refuses the token that was shown", i)
		}
		if a.Check("tsa_" + strings.Repeat("A", 43)) {
			t.Errorf("replica %d accepts another token", i)
		}
	}
}
