package vaultstore_test

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"testing"

	"github.com/tokensvc/tokensvc/internal/store/vaultstore"
)

func mustHex(tb testing.TB, s string) []byte {
	tb.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// TestKWPRFC5649Vectors checks the key wrap against the examples of RFC 5649 §6: one
// key that needs W, and one short enough for the single-block path.
func TestKWPRFC5649Vectors(t *testing.T) {
	kek := "5840df6e29b02af1ab493b705bf16ea1ae8338f4dcc176a8"
	tests := []struct {
		name      string
		key, wrap string
	}{
		{"20 octets", "c37b7e6492584340bed12207808941155068f738", "138bdeaa9b8fa7fc61f97742e72248ee5ae6ae5360d1ae6a5f54f373fa543b6a"},
		{"7 octets", "466f7250617369", "afbeb0f07dfbf5419200f2ccb50bb24f"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := vaultstore.WrapKWP(mustHex(t, kek), mustHex(t, tc.key))
			if err != nil {
				t.Fatalf("wrap: got error %v, want nil", err)
			}
			if hex.EncodeToString(got) != tc.wrap {
				t.Errorf("wrap: got %x, want %s", got, tc.wrap)
			}
			back, err := vaultstore.UnwrapKWP(mustHex(t, kek), mustHex(t, tc.wrap))
			if err != nil {
				t.Fatalf("unwrap: got error %v, want nil", err)
			}
			if hex.EncodeToString(back) != tc.key {
				t.Errorf("unwrap: got %x, want %s", back, tc.key)
			}
		})
	}
}

// TestKWPRoundTripAndTamper wraps every length a key may have in Transit with AES-256
// and checks that any flipped bit or a wrong KEK is refused.
func TestKWPRoundTripAndTamper(t *testing.T) {
	kek := make([]byte, 32)
	rand.Read(kek)
	other := bytes.Clone(kek)
	other[0] ^= 1
	for n := 1; n <= 80; n++ {
		key := make([]byte, n)
		rand.Read(key)
		wrapped, err := vaultstore.WrapKWP(kek, key)
		if err != nil {
			t.Fatalf("wrap %d bytes: got error %v, want nil", n, err)
		}
		if want := 8 + (n+7)/8*8; len(wrapped) != want {
			t.Errorf("wrap %d bytes: got %d bytes, want %d", n, len(wrapped), want)
		}
		got, err := vaultstore.UnwrapKWP(kek, wrapped)
		if err != nil || !bytes.Equal(got, key) {
			t.Fatalf("unwrap %d bytes: got %x, %v, want %x, nil", n, got, err, key)
		}
		for bit := 0; bit < len(wrapped)*8; bit += 7 {
			bad := bytes.Clone(wrapped)
			bad[bit/8] ^= 1 << (bit % 8)
			if _, err := vaultstore.UnwrapKWP(kek, bad); err == nil {
				t.Fatalf("unwrap %d bytes with bit %d flipped: got nil error, want one", n, bit)
			}
		}
		if _, err := vaultstore.UnwrapKWP(other, wrapped); err == nil {
			t.Fatalf("unwrap %d bytes with another KEK: got nil error, want one", n)
		}
	}
	if _, err := vaultstore.WrapKWP(kek, nil); err == nil {
		t.Error("wrap of an empty key: got nil error, want one")
	}
	for _, n := range []int{0, 8, 15, 17} {
		if _, err := vaultstore.UnwrapKWP(kek, make([]byte, n)); err == nil {
			t.Errorf("unwrap of %d bytes: got nil error, want one", n)
		}
	}
}
