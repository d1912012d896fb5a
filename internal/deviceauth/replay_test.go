package deviceauth_test

import (
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/tokensvc/tokensvc/internal/deviceauth"
)

func assertionAt(tb testing.TB, jti string, iat time.Time) string {
	tb.Helper()
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
		"iss": "d1", "sub": "d1", "aud": "tokensvc", "iat": iat.Unix(), "exp": iat.Add(time.Minute).Unix(), "jti": jti,
	}).SignedString([]byte(secret))
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

// TestReplayAcrossRestarts runs one "process" after another on the same store: a jti
// used before a restart stays used after it, whether the first process stopped cleanly
// (its memory was saved) or crashed (assertions issued before the restart are refused).
func TestReplayAcrossRestarts(t *testing.T) {
	tests := []struct {
		name  string
		clean bool
		// wantFresh is whether an assertion signed right at the restart is accepted.
		wantFresh bool
	}{
		{"clean shutdown", true, true},
		{"crash", false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := mustStore(t)
			now := epoch
			clock := func() time.Time { return now }
			first := deviceauth.NewVerifier(st, "tokensvc", clock)
			if err := first.Restore(t.Context(), st); err != nil {
				t.Fatal(err)
			}
			used := assertionAt(t, "used", now)
			if _, err := first.Verify(t.Context(), used); err != nil {
				t.Fatalf("first use: got %v, want success", err)
			}
			if tt.clean {
				if err := first.Save(t.Context(), st); err != nil {
					t.Fatal(err)
				}
				if _, err := first.Verify(t.Context(), assertionAt(t, "late", now)); err == nil {
					t.Errorf("after Save: got success, want refusal (the memory is already written)")
				}
			}

			now = now.Add(10 * time.Second)
			second := deviceauth.NewVerifier(st, "tokensvc", clock)
			if err := second.Restore(t.Context(), st); err != nil {
				t.Fatal(err)
			}
			if _, err := second.Verify(t.Context(), used); err == nil {
				t.Errorf("replay after restart: got success, want refusal")
			}
			_, err := second.Verify(t.Context(), assertionAt(t, "fresh", now))
			if (err == nil) != tt.wantFresh {
				t.Errorf("fresh assertion right after restart: got error %v, want ok=%v", err, tt.wantFresh)
			}
			now = now.Add(deviceauth.Leeway)
			if _, err := second.Verify(t.Context(), assertionAt(t, "later", now)); err != nil {
				t.Errorf("fresh assertion %v after restart: got %v, want success", deviceauth.Leeway, err)
			}

			// The second process crashes too; the third must not trust a stale "clean".
			third := deviceauth.NewVerifier(st, "tokensvc", clock)
			if err := third.Restore(t.Context(), st); err != nil {
				t.Fatal(err)
			}
			if _, err := third.Verify(t.Context(), assertionAt(t, "later", now)); err == nil {
				t.Errorf("replay after a crash of the restarted process: got success, want refusal")
			}
		})
	}
}

// TestReplayAcrossVersions: the memory a version before digests saved (values as they
// are, under "clean" and "used") is still honoured; and what this version saves reads,
// to such a version, as a crash (it would refuse older assertions) and never as a clean
// memory of digests it could not match.
func TestReplayAcrossVersions(t *testing.T) {
	st := mustStore(t)
	now := epoch
	clock := func() time.Time { return now }
	used := assertionAt(t, "used", now)
	legacy, _ := json.Marshal(map[string]any{
		"clean": true, "at": now,
		"used": map[string]int64{"d1\x00used": now.Add(time.Minute + deviceauth.Leeway).Unix()},
	})
	if err := st.PutSetting(t.Context(), deviceauth.ReplaySetting, legacy); err != nil {
		t.Fatal(err)
	}
	now = now.Add(5 * time.Second)
	v := deviceauth.NewVerifier(st, "tokensvc", clock)
	if err := v.Restore(t.Context(), st); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(t.Context(), used); err == nil {
		t.Error("a jti the earlier version saved as used: got success, want refusal")
	}
	if _, err := v.Verify(t.Context(), assertionAt(t, "fresh", now)); err != nil {
		t.Errorf("a fresh assertion after restoring the earlier form: got %v, want success", err)
	}
	if err := v.Save(t.Context(), st); err != nil {
		t.Fatal(err)
	}
	raw, err := st.GetSetting(t.Context(), deviceauth.ReplaySetting)
	if err != nil {
		t.Fatal(err)
	}
	var old struct {
		Clean bool             `json:"clean"`
		Used  map[string]int64 `json:"used"`
	}
	if err := json.Unmarshal(raw, &old); err != nil {
		t.Fatal(err)
	}
	if old.Clean || len(old.Used) != 0 {
		t.Errorf("saved state as the earlier version reads it: clean=%v used=%d, want a crash (false, 0)", old.Clean, len(old.Used))
	}
	// This version restores its own save: both jtis stay used.
	now = now.Add(5 * time.Second)
	next := deviceauth.NewVerifier(st, "tokensvc", clock)
	if err := next.Restore(t.Context(), st); err != nil {
		t.Fatal(err)
	}
	for _, jti := range []string{"used", "fresh"} {
		if _, err := next.Verify(t.Context(), assertionAt(t, jti, epoch.Add(5*time.Second))); err == nil {
			t.Errorf("jti %q after a restart of this version: got success, want refusal", jti)
		}
	}
}

func TestRestoreOnNewStoreStartsOpen(t *testing.T) {
	st := mustStore(t)
	v := deviceauth.NewVerifier(st, "tokensvc", func() time.Time { return epoch })
	if err := v.Restore(t.Context(), st); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(t.Context(), assertionAt(t, "j", epoch)); err != nil {
		t.Errorf("first start: got %v, want success (nothing can have been used before)", err)
	}
}

// TestCrashCutoffSurvivesCleanRestart: a crash, then a quick clean restart, then another
// start. The process after the crash refuses the crashed process's jtis by their iat;
// that rule must reach the next process too, which has no saved jtis of the crashed one.
func TestCrashCutoffSurvivesCleanRestart(t *testing.T) {
	st := mustStore(t)
	now := epoch
	clock := func() time.Time { return now }
	crashed := deviceauth.NewVerifier(st, "tokensvc", clock)
	if err := crashed.Restore(t.Context(), st); err != nil {
		t.Fatal(err)
	}
	used := assertionAt(t, "used", now)
	if _, err := crashed.Verify(t.Context(), used); err != nil {
		t.Fatalf("first use: got %v, want success", err)
	}
	// crashed never saves.

	now = now.Add(5 * time.Second)
	afterCrash := deviceauth.NewVerifier(st, "tokensvc", clock)
	if err := afterCrash.Restore(t.Context(), st); err != nil {
		t.Fatal(err)
	}
	now = now.Add(2 * time.Second)
	if err := afterCrash.Save(t.Context(), st); err != nil {
		t.Fatal(err)
	}

	now = now.Add(2 * time.Second)
	next := deviceauth.NewVerifier(st, "tokensvc", clock)
	if err := next.Restore(t.Context(), st); err != nil {
		t.Fatal(err)
	}
	if _, err := next.Verify(t.Context(), used); err == nil {
		t.Fatal("the crashed process's jti, 9 s after its first use: got success, want refusal")
	}

	// Once no assertion from before the crash can still be alive, the rule is dropped.
	now = now.Add(deviceauth.MaxLifetime + 3*deviceauth.Leeway)
	if err := next.Save(t.Context(), st); err != nil {
		t.Fatal(err)
	}
	later := deviceauth.NewVerifier(st, "tokensvc", clock)
	if err := later.Restore(t.Context(), st); err != nil {
		t.Fatal(err)
	}
	if _, err := later.Verify(t.Context(), assertionAt(t, "fresh", now)); err != nil {
		t.Fatalf("fresh assertion long after the crash: got %v, want success", err)
	}
}

// TestNonceAcrossRestarts: nonces are tagged with a key kept in the store, so they
// outlive the process that issued them; a used one stays used after a clean restart,
// and after a crash every nonce issued before the restart is refused while one issued
// after it is good at once.
func TestNonceAcrossRestarts(t *testing.T) {
	tests := []struct {
		name  string
		clean bool
	}{
		{"clean shutdown", true},
		{"crash", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := mustStore(t)
			now := epoch
			clock := func() time.Time { return now }
			start := func() *deviceauth.Verifier {
				keys := deviceauth.NewNonceKeys(st, clock, nil)
				if err := keys.Load(t.Context()); err != nil {
					t.Fatal(err)
				}
				v := deviceauth.NewVerifier(st, "tokensvc", clock, deviceauth.WithNonceKeys(keys))
				if err := v.Restore(t.Context(), st); err != nil {
					t.Fatal(err)
				}
				return v
			}
			first := start()
			used, _ := first.IssueNonce()
			unused, _ := first.IssueNonce()
			if _, err := first.Verify(t.Context(), nonceAssertion(t, used, secret, nil)); err != nil {
				t.Fatalf("first use: got %v, want success", err)
			}
			if tt.clean {
				if err := first.Save(t.Context(), st); err != nil {
					t.Fatal(err)
				}
			}
			now = now.Add(5 * time.Second)
			second := start()
			if _, err := second.Verify(t.Context(), nonceAssertion(t, used, secret, nil)); !errors.Is(err, deviceauth.ErrUnauthenticated) {
				t.Errorf("the used nonce after the restart: got %v, want ErrUnauthenticated", err)
			}
			_, err := second.Verify(t.Context(), nonceAssertion(t, unused, secret, nil))
			if wantOK := tt.clean; (err == nil) != wantOK {
				t.Errorf("an unused nonce from before the restart: got %v, want ok=%v", err, wantOK)
			}
			fresh, _ := second.IssueNonce()
			if _, err := second.Verify(t.Context(), nonceAssertion(t, fresh, secret, nil)); err != nil {
				t.Errorf("a nonce issued after the restart: got %v, want success", err)
			}
		})
	}
}
