package link

import (
	"fmt"
	"strings"

	"github.com/tokensvc/tokensvc/internal/agent/token"
)

// clientCertAlerts are the TLS alerts a server sends about the client's certificate,
// as crypto/tls words them after "remote error: tls: ". MQTT clients keep only the
// text of the error, so the text is what can be matched.
var clientCertAlerts = []string{
	"bad certificate", "unsupported certificate", "revoked certificate", "expired certificate",
	"unknown certificate", "unknown certificate authority", "certificate required", "access denied",
}

// CertificateRefused returns err wrapping ErrRefused when tok's credential is a device
// certificate and err is the peer's TLS alert refusing it (its CA no longer trusted,
// the certificate revoked or expired by the peer's clock): the loop then asks the
// keeper for a new certificate at once, as for a refused token, instead of dialling
// with the refused one until its scheduled renewal. Other errors are returned as they
// are.
func CertificateRefused(err error, tok token.Token) error {
	if err == nil || tok.Certificate == nil {
		return err
	}
	msg := err.Error()
	for _, a := range clientCertAlerts {
		if i := strings.Index(msg, "remote error: tls: "+a); i >= 0 && !strings.HasPrefix(msg[i+len("remote error: tls: "+a):], " ") {
			return fmt.Errorf("%w: %w", ErrRefused, err)
		}
	}
	return err
}
