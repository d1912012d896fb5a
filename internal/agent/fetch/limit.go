package fetch

import (
	"fmt"
	"io"
	"net/http"
)

// MaxResponseBytes bounds the body of any answer the Client reads: a batch of MaxBatch
// tokens with all their profiles is a few MiB; a service (or whatever answers at the
// configured URL) sending more would otherwise be read into memory whole.
const MaxResponseBytes = 16 << 20

// limitBodies returns a copy of hc whose responses fail to read past MaxResponseBytes.
func limitBodies(hc *http.Client) *http.Client {
	out := *hc
	base := hc.Transport
	if base == nil {
		base = http.DefaultTransport
	}
	out.Transport = limitedTransport{base}
	return &out
}

type limitedTransport struct{ base http.RoundTripper }

func (t limitedTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := t.base.RoundTrip(r)
	if err == nil && resp.Body != nil {
		resp.Body = &limitedBody{ReadCloser: resp.Body, left: MaxResponseBytes}
	}
	return resp, err
}

// limitedBody fails once more than left bytes would be read.
type limitedBody struct {
	io.ReadCloser
	left int64
}

func (b *limitedBody) Read(p []byte) (int, error) {
	if b.left < 0 {
		return 0, errTooLarge
	}
	if int64(len(p)) > b.left+1 {
		p = p[:b.left+1]
	}
	n, err := b.ReadCloser.Read(p)
	b.left -= int64(n)
	if b.left < 0 {
		return 0, errTooLarge
	}
	return n, err
}

var errTooLarge = fmt.Errorf("response larger than %d bytes", MaxResponseBytes)
