package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tokensvc/tokensvc/internal/agent/testpeer"
)

// TestServiceURLPasswordNotLogged: a service URL may carry user information for a proxy
// in front of tokensvc (https://user:password@host); the password must not reach the
// log, which names the service at start, in either mode.
func TestServiceURLPasswordNotLogged(t *testing.T) {
	const secret = "pr0xy-s3cret"
	dir := t.TempDir()
	cred := filepath.Join(dir, "cred")
	if err := os.WriteFile(cred, []byte("0123456789abcdef0123456789abcdef"), 0o600); err != nil {
		t.Fatal(err)
	}
	base := []string{"-service-url", "https://edge:" + secret + "@127.0.0.1:1", "-device-id", "d1",
		"-credential-file", cred, "-boot-splay", "0s"}
	for name, extra := range map[string][]string{
		"device":  {"-state-dir", filepath.Join(dir, "device")},
		"gateway": {"-state-dir", filepath.Join(dir, "gateway"), "-gateway", "-link", "amqp", "-leaf", "l1", "-gateway-udp", "127.0.0.1:0"},
	} {
		t.Run(name, func(t *testing.T) {
			a := mustStartAgent(t, append(append([]string(nil), base...), extra...))
			testpeer.WaitFor(t, "the start and a failed fetch", 10*time.Second, func() bool {
				log := a.stderr.String()
				return strings.Contains(log, `"msg":"starting`) && strings.Contains(log, "failed")
			})
			a.stop(t)
			if log := a.stderr.String(); strings.Contains(log, secret) {
				t.Errorf("the service URL's password is in the log:\n%s", log)
			}
		})
	}
}
