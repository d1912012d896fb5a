package deviceauth

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"time"
)

// NonceTTL is how long a nonce can be used after it was issued.
const NonceTTL = 60 * time.Second

// A nonce is self-verifying, so any replica sharing the key ring accepts it without
// having issued it: base64url (no padding) of
//
//	kid (4) | issued, Unix milliseconds (6) | random (16) | HMAC-SHA256 tag (16)
//
// where the tag is the first 16 bytes of HMAC-SHA256(key kid, nonceDomain | the first
// 26 bytes). 56 characters, inside maxNonce. Nothing in it is secret; the key is.
// Single use is the replay store's job (see Verifier.verifyNonce).
const (
	nonceKIDLen  = 4
	nonceTimeLen = 6
	nonceRandLen = 16
	nonceTagLen  = 16
	nonceBodyLen = nonceKIDLen + nonceTimeLen + nonceRandLen
	nonceLen     = nonceBodyLen + nonceTagLen
)

// nonceDomain separates these MACs from any other use of the key.
const nonceDomain = "tokensvc/nonce/v1\x00"

var (
	errNonceMalformed = errors.New("nonce is not one this service issues")
	errNonceKey       = errors.New("nonce names a key this service does not hold")
	errNonceTag       = errors.New("nonce tag does not verify")
	errNonceExpired   = errors.New("nonce expired")
	errNonceRevoked   = errors.New("nonce issued before the device was revoked")
)

// sealNonce returns a new nonce issued at now under key kid.
func sealNonce(kid uint32, key []byte, now time.Time) string {
	var b [nonceLen]byte
	binary.BigEndian.PutUint32(b[:nonceKIDLen], kid)
	putMillis(b[nonceKIDLen:nonceKIDLen+nonceTimeLen], now.UnixMilli())
	_, _ = rand.Read(b[nonceKIDLen+nonceTimeLen : nonceBodyLen]) // never fails (Go 1.24+)
	copy(b[nonceBodyLen:], nonceTag(key, b[:nonceBodyLen]))
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// openedNonce is a nonce whose form is right; its tag is not checked yet.
type openedNonce struct {
	kid    uint32
	issued time.Time
	body   []byte
	tag    []byte
}

// openNonce decodes s without checking its tag.
func openNonce(s string) (openedNonce, error) {
	if base64.RawURLEncoding.DecodedLen(len(s)) != nonceLen {
		return openedNonce{}, errNonceMalformed
	}
	b, err := base64.RawURLEncoding.Strict().DecodeString(s)
	if err != nil || len(b) != nonceLen {
		return openedNonce{}, errNonceMalformed
	}
	return openedNonce{
		kid:    binary.BigEndian.Uint32(b[:nonceKIDLen]),
		issued: time.UnixMilli(millis(b[nonceKIDLen : nonceKIDLen+nonceTimeLen])),
		body:   b[:nonceBodyLen],
		tag:    b[nonceBodyLen:],
	}, nil
}

// verify checks the tag under key (constant time) and the times: unexpired at now and
// issued no earlier than notBefore.
func (n openedNonce) verify(key []byte, notBefore, now time.Time) error {
	if !hmac.Equal(n.tag, nonceTag(key, n.body)) {
		return errNonceTag
	}
	switch {
	case now.Sub(n.issued) > NonceTTL:
		return errNonceExpired
	case n.issued.Before(notBefore):
		return errNonceRevoked
	}
	return nil
}

func nonceTag(key, body []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(nonceDomain))
	m.Write(body)
	return m.Sum(nil)[:nonceTagLen]
}

func putMillis(b []byte, ms int64) {
	var full [8]byte
	binary.BigEndian.PutUint64(full[:], uint64(max(ms, 0)))
	copy(b, full[8-nonceTimeLen:])
}

func millis(b []byte) int64 {
	var full [8]byte
	copy(full[8-nonceTimeLen:], b)
	return int64(binary.BigEndian.Uint64(full[:]))
}
