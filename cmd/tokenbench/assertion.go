package main

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"hash"
	"strconv"
	"time"
)

// hs256Header is base64url({"alg":"HS256","typ":"JWT"}).
var hs256Header = base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT"}`))

// signer builds HS256 device assertions (iss = sub = device, aud, iat, exp, jti) by hand:
// the generator runs on the same cores as the service, so it should spend as little CPU
// as it can. One signer per worker; it is not safe for concurrent use.
type signer struct {
	audience string
	prefix   string // per-worker jti prefix
	seq      uint64
	buf      []byte
	macs     map[string]hash.Hash // per device secret
}

func newSigner(audience, jtiPrefix string) *signer {
	return &signer{audience: audience, prefix: jtiPrefix, macs: map[string]hash.Hash{}}
}

// sign returns a fresh assertion for d at now with a jti unique to this signer.
func (s *signer) sign(d Device, now time.Time) string {
	s.seq++
	iat := now.Unix()
	c := s.buf[:0]
	c = append(c, `{"iss":`...)
	c = strconv.AppendQuote(c, d.ID)
	c = append(c, `,"sub":`...)
	c = strconv.AppendQuote(c, d.ID)
	c = append(c, `,"aud":`...)
	c = strconv.AppendQuote(c, s.audience)
	c = append(c, `,"iat":`...)
	c = strconv.AppendInt(c, iat, 10)
	c = append(c, `,"exp":`...)
	c = strconv.AppendInt(c, iat+120, 10)
	c = append(c, `,"jti":"`...)
	c = append(c, s.prefix...)
	c = strconv.AppendUint(c, s.seq, 36)
	c = append(c, `"}`...)
	s.buf = c

	out := make([]byte, 0, len(hs256Header)+1+base64.RawURLEncoding.EncodedLen(len(c))+1+43)
	out = append(out, hs256Header...)
	out = append(out, '.')
	out = base64.RawURLEncoding.AppendEncode(out, c)
	mac, ok := s.macs[d.Secret]
	if !ok {
		mac = hmac.New(sha256.New, []byte(d.Secret))
		s.macs[d.Secret] = mac
	}
	mac.Reset()
	mac.Write(out)
	var sum [sha256.Size]byte
	out = append(out, '.')
	out = base64.RawURLEncoding.AppendEncode(out, mac.Sum(sum[:0]))
	return string(out)
}
