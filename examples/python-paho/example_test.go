// Package pythonpaho holds the paho-mqtt examples for AWS IoT Core (custom authorizer:
// aws_publish.py; X.509 certificates from the agent: aws_iot_cert.py); the tests run the
// scripts with Debian's python3-paho-mqtt against the real service and the AWS IoT Core
// stand-ins (custom authentication, certificates).
package pythonpaho

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"

	"github.com/tokensvc/tokensvc/internal/awsauth/awspeer"
	"github.com/tokensvc/tokensvc/internal/testbin"
)

// python returns a python3 that imports paho.mqtt: Debian's first (where
// scripts/agent-test-deps.sh installs python3-paho-mqtt), then the one on PATH.
func python(t *testing.T) string {
	t.Helper()
	candidates := []string{"/usr/bin/python3"}
	if p, err := exec.LookPath("python3"); err == nil {
		candidates = append(candidates, p)
	}
	for _, py := range candidates {
		if exec.Command(py, "-c", "import paho.mqtt.client").Run() == nil {
			return py
		}
	}
	testbin.Missing(t, "no python3 with paho-mqtt; run: bash scripts/agent-test-deps.sh (it installs python3-paho-mqtt)")
	return ""
}

func TestPahoPublishesWithTheProfileOnly(t *testing.T) {
	py := python(t)
	for _, unsigned := range []bool{false, true} {
		name := map[bool]string{false: "signing", true: "token in the password"}[unsigned]
		t.Run(name, func(t *testing.T) {
			f := awspeer.NewFixture(t, awspeer.FixtureOptions{Unsigned: unsigned})
			profile := f.Token(t, "").Response.Mqtt
			run := func(p any) ([]byte, error) {
				b, err := json.Marshal(p)
				if err != nil {
					t.Fatal(err)
				}
				path := filepath.Join(t.TempDir(), "profile.json")
				if err := os.WriteFile(path, b, 0o600); err != nil {
					t.Fatal(err)
				}
				cmd := exec.Command(py, "aws_publish.py", path)
				cmd.Env = append(os.Environ(), "CA_FILE="+f.CAFile, "BROKER_ADDR="+f.Broker.Addr, "MESSAGES=3")
				return cmd.CombinedOutput()
			}
			out, err := run(profile)
			if err != nil {
				t.Fatalf("aws_publish.py: %v\n%s\nstand-in: %+v", err, out, f.Broker.Stats().Refused)
			}
			t.Logf("%s", out)
			pubs := f.Broker.Published()
			if len(pubs) != 3 || pubs[0].Topic != profile.Topics.Publish || pubs[0].ClientID != f.DeviceID {
				t.Fatalf("stand-in got %+v, want 3 messages on %s", pubs, profile.Topics.Publish)
			}
			st := f.Broker.Stats()
			if st.Accepted != 1 || len(st.Refused) != 0 || !slices.Equal(st.Events[0].Protocols, []string{"tls", "mqtt"}) ||
				st.Events[0].ProtocolData.TLS.ServerName != profile.Tls.ServerName {
				t.Fatalf("stand-in: %+v", st)
			}

			// The same client without the profile's ALPN is turned away, as AWS IoT
			// Core turns it away on port 443.
			noALPN := *profile
			noALPN.Alpn = nil
			if out, err := run(noALPN); err == nil {
				t.Fatalf("connected without ALPN:\n%s", out)
			}
			if n := f.Broker.Stats().Refused[awspeer.RefusedALPN]; n < 1 {
				t.Fatalf("ALPN refusals: got %d, want ≥ 1", n)
			}
		})
	}
}
