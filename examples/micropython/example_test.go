// Package micropython holds the MicroPython example; its test runs the same file under
// CPython against the real service and an MQTT broker that checks tokens like IoT Hub.
package micropython

import (
	"os"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"github.com/tokensvc/tokensvc/internal/agent/testpeer"
	"github.com/tokensvc/tokensvc/internal/domain"
	"github.com/tokensvc/tokensvc/internal/testbin"
)

func TestTokenClientUnderCPython(t *testing.T) {
	py, err := exec.LookPath("python3")
	if err != nil {
		testbin.Missing(t, "python3 not found: the test runs the example under CPython")
	}
	y2k := -time.Since(time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC))
	tests := []struct {
		name  string
		skew  time.Duration
		nonce bool
	}{
		{"clock right", 0, false},
		{"clock at the year 2000 (no RTC)", y2k, false},
		{"clock at the year 2000, server nonce", y2k, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := testpeer.NewFixture(t, "esp32-0001", time.Hour, domain.Hub{})
			broker := testpeer.StartMQTT(t, testpeer.MQTTOptions{Hub: testpeer.Hub, Cert: f.CA.Issue(t, testpeer.Hub).TLS,
				Keys: map[string][]byte{f.DeviceID: f.Key}})
			cmd := exec.Command(py, "tokenclient.py")
			cmd.Env = append(os.Environ(),
				"TOKENSVC_URL="+f.Service.URL, "DEVICE_ID="+f.DeviceID, "DEVICE_SECRET="+f.Secret,
				"CA_FILE="+f.CAFile, "BROKER_ADDR="+broker.TLSAddr, "MESSAGES=3",
				"DEVICE_CLOCK_SKEW="+strconv.Itoa(int(tt.skew/time.Second)))
			if tt.nonce {
				cmd.Env = append(cmd.Env, "USE_NONCE=1")
			}
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("tokenclient.py: %v\n%s", err, out)
			}
			t.Logf("%s", out)
			pubs := broker.Published()
			if len(pubs) != 3 {
				t.Fatalf("broker got %d messages, want 3", len(pubs))
			}
			if ct := pubs[0].Properties.Get("$.ct"); ct != "application/json" {
				t.Errorf("$.ct: got %q, want application/json", ct)
			}
			if bs := broker.Stats(); bs.Accepted != 1 || len(bs.Refused) != 0 {
				t.Errorf("broker: got %+v, want one accepted connection", bs)
			}
		})
	}
}
