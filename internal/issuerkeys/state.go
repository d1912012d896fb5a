package issuerkeys

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/tokensvc/tokensvc/internal/domain"
)

// ringVersion is the version of the stored ring format.
const ringVersion = 1

// storedRing is the ring as the store setting holds it (JSON with explicit names, so
// renaming a Go field cannot change the format).
type storedRing struct {
	Version int         `json:"version"`
	Keys    []storedKey `json:"keys"`
}

// storedKey is one key's metadata, public half and certificate, and — for the local
// backend only — its PKCS#8 private key. With Transit, Private is empty.
type storedKey struct {
	ID             string     `json:"kid"`
	Alg            string     `json:"alg"`
	CreatedAt      time.Time  `json:"createdAt"`
	SignsFrom      time.Time  `json:"signsFrom"`
	RetiredAt      *time.Time `json:"retiredAt,omitempty"`
	PublishedUntil *time.Time `json:"publishedUntil,omitempty"`
	Public         []byte     `json:"public"`      // PKIX DER
	Certificate    []byte     `json:"certificate"` // self-signed, DER
	Transit        bool       `json:"transit,omitempty"`
	Private        []byte     `json:"private,omitempty"` // PKCS#8 DER (local backend)
}

func decodeRing(b []byte) (storedRing, error) {
	var r storedRing
	if err := json.Unmarshal(b, &r); err != nil {
		return storedRing{}, fmt.Errorf("issuer key ring setting does not parse: %v", err)
	}
	if r.Version != ringVersion {
		return storedRing{}, fmt.Errorf("issuer key ring setting has version %d; this build reads %d", r.Version, ringVersion)
	}
	return r, nil
}

func encodeRing(r storedRing) ([]byte, error) {
	r.Version = ringVersion
	return json.Marshal(r)
}

// meta returns k's domain record.
func (k storedKey) meta() (domain.IssuerKey, error) {
	pub, err := x509.ParsePKIXPublicKey(k.Public)
	if err != nil {
		return domain.IssuerKey{}, fmt.Errorf("issuer key %q: public key does not parse: %v", k.ID, err)
	}
	alg := domain.IssuerAlg(k.Alg)
	switch p := pub.(type) {
	case *rsa.PublicKey:
		if alg != domain.AlgRS256 || p.N.BitLen() < 2048 {
			return domain.IssuerKey{}, fmt.Errorf("issuer key %q: an RSA key of %d bits does not fit %s", k.ID, p.N.BitLen(), alg)
		}
	case *ecdsa.PublicKey:
		if alg != domain.AlgES256 || p.Curve != elliptic.P256() {
			return domain.IssuerKey{}, fmt.Errorf("issuer key %q: an ECDSA key does not fit %s", k.ID, alg)
		}
	default:
		return domain.IssuerKey{}, fmt.Errorf("issuer key %q: public key of type %T", k.ID, pub)
	}
	m := domain.IssuerKey{
		ID: k.ID, Alg: alg, Public: pub, Certificate: k.Certificate,
		CreatedAt: k.CreatedAt, SignsFrom: k.SignsFrom, Transit: k.Transit,
	}
	if k.RetiredAt != nil {
		m.RetiredAt = *k.RetiredAt
	}
	if k.PublishedUntil != nil {
		m.PublishedUntil = *k.PublishedUntil
	}
	return m, nil
}

// merge returns the union of two versions of the ring by kid, so a write never drops
// a key another replica added meanwhile. For a key in both, the earlier retirement
// wins (that is when its successor started signing) with the later publishedUntil
// (the longer publication is the safe one).
func merge(a, b []storedKey) []storedKey {
	out := slices.Clone(a)
	for _, kb := range b {
		i := slices.IndexFunc(out, func(k storedKey) bool { return k.ID == kb.ID })
		if i < 0 {
			out = append(out, kb)
			continue
		}
		ka := &out[i]
		if kb.RetiredAt != nil && (ka.RetiredAt == nil || kb.RetiredAt.Before(*ka.RetiredAt)) {
			ka.RetiredAt = kb.RetiredAt
		}
		if kb.PublishedUntil != nil && (ka.PublishedUntil == nil || kb.PublishedUntil.After(*ka.PublishedUntil)) {
			ka.PublishedUntil = kb.PublishedUntil
		}
	}
	sortKeys(out)
	return out
}

// sortKeys orders keys newest first (then by kid, so every replica agrees).
func sortKeys(ks []storedKey) {
	slices.SortFunc(ks, func(a, b storedKey) int {
		if c := b.CreatedAt.Compare(a.CreatedAt); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
}

// key is a loaded key: its record, its signer and its JWS header, precomputed.
type key struct {
	meta domain.IssuerKey
	// stored is the key as the store held it, for writing it back should a concurrent
	// write have dropped it (reload).
	stored storedKey
	signer DigestSigner
	// header is base64url of {"alg":…,"kid":…,"typ":"JWT"} followed by ".".
	header string
}

// snapshot is the ring as last read or written, newest key first.
type snapshot struct {
	keys []*key
}

func jwsHeader(alg domain.IssuerAlg, kid string) string {
	h, _ := json.Marshal(struct {
		Alg string `json:"alg"`
		Kid string `json:"kid"`
		Typ string `json:"typ"`
	}{string(alg), kid, "JWT"})
	return base64.RawURLEncoding.EncodeToString(h) + "."
}

// signing returns the key that signs for alg at now: among the keys of alg that sign
// by now and are not retired, the one that started last. nil when there is none.
func (s *snapshot) signing(alg domain.IssuerAlg, now time.Time) *key {
	var best *key
	for _, k := range s.keys {
		if k.meta.Alg != alg || k.meta.State(now) != domain.KeyActive {
			continue
		}
		if best == nil || k.meta.SignsFrom.After(best.meta.SignsFrom) {
			best = k
		}
	}
	return best
}

// live says whether alg has a key that signs now or will (active or pending).
func (s *snapshot) live(alg domain.IssuerAlg, now time.Time) bool {
	for _, k := range s.keys {
		if k.meta.Alg == alg && k.meta.State(now) != domain.KeyRetired {
			return true
		}
	}
	return false
}

func (s *snapshot) byID(kid string) *key {
	for _, k := range s.keys {
		if k.meta.ID == kid {
			return k
		}
	}
	return nil
}
