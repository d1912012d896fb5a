package devicefile_test

import (
	"strings"
	"testing"

	"github.com/tokensvc/tokensvc/internal/domain"
	"github.com/tokensvc/tokensvc/internal/registry/devicefile"
)

// FuzzReader feeds arbitrary NDJSON and CSV bodies to the reader: it must
// never panic, report lines in increasing order, and pass on only devices whose ID and
// hub the spec allows.
func FuzzReader(f *testing.F) {
	f.Add(true, "{\"deviceId\":\"d1\",\"hub\":\"main\",\"auth\":{\"type\":\"hs256\"}}\n\n{\"deviceId\":1}\nnot json\n")
	f.Add(false, "deviceId,hub,authType,status\nd1,main,hs256,enabled\n\"d2\",main,eddsa,\"dis\nabled\"\nd3\n")
	f.Add(false, "\ufeffid,hub,authType,maxTtlSeconds\nd1,main,hs256,x\n")
	f.Add(false, "deviceId,hub,authType\n\"unterminated")
	f.Add(true, strings.Repeat("x", 70000)+"\n{}")
	f.Fuzz(func(t *testing.T, ndjson bool, body string) {
		ct := "text/csv"
		if ndjson {
			ct = "application/x-ndjson"
		}
		lines := readAll(t, ct, body)
		prev := 0
		for _, l := range lines {
			if l.Number <= prev {
				t.Fatalf("line numbers not increasing: %d after %d", l.Number, prev)
			}
			prev = l.Number
			if l.Err == nil && (!domain.ValidID(l.Device.DeviceId) || l.Device.Hub == "") {
				t.Fatalf("line %d passed with device %q hub %q", l.Number, l.Device.DeviceId, l.Device.Hub)
			}
		}
	})
}

// readAll reads body to its end (or its first fatal error) and returns the lines.
func readAll(tb testing.TB, contentType, body string) []devicefile.Line {
	tb.Helper()
	r, err := devicefile.NewReader(contentType, strings.NewReader(body))
	if err != nil {
		return nil
	}
	var out []devicefile.Line
	for {
		l, err := r.Next()
		if err != nil {
			return out
		}
		out = append(out, l)
	}
}

func TestGatewayColumns(t *testing.T) {
	tests := []struct {
		name, ct, body string
		wantGateway    bool
		wantParent     string
		wantErr        string
	}{
		{"csv gateway", "text/csv", "deviceId,hub,authType,gateway\ngw,main,hs256,true\n", true, "", ""},
		{"csv IoT Hub edge capability", "text/csv", "id,hub,authType,capabilities.iotEdge\ngw,main,hs256,TRUE\n", true, "", ""},
		{"csv leaf", "text/csv", "deviceId,hub,authType,gateway,parent\nleaf,main,hs256,false,gw\n", false, "gw", ""},
		{"csv empty cells", "text/csv", "deviceId,hub,authType,gateway,parent\nleaf,main,hs256,,\n", false, "", ""},
		{"csv gateway not a boolean", "text/csv", "deviceId,hub,authType,gateway\ngw,main,hs256,yes\n", false, "", "column gateway"},
		{"csv parent not an ID", "text/csv", "deviceId,hub,authType,parent\nleaf,main,hs256,a/b\n", false, "", "/parent"},
		{"ndjson leaf", "application/x-ndjson", `{"deviceId":"leaf","hub":"main","auth":{"type":"hs256"},"parent":"gw"}` + "\n", false, "gw", ""},
		{"ndjson gateway", "application/x-ndjson", `{"deviceId":"gw","hub":"main","auth":{"type":"hs256"},"gateway":true}` + "\n", true, "", ""},
		{"ndjson gateway not a boolean", "application/x-ndjson", `{"deviceId":"gw","hub":"main","auth":{"type":"hs256"},"gateway":"true"}` + "\n", false, "", "/gateway"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			lines := readAll(t, tt.ct, tt.body)
			if len(lines) != 1 {
				t.Fatalf("got %d lines, want 1", len(lines))
			}
			l := lines[0]
			if tt.wantErr != "" {
				if l.Err == nil || !strings.Contains(l.Err.Error(), tt.wantErr) {
					t.Fatalf("got error %v, want one naming %q", l.Err, tt.wantErr)
				}
				return
			}
			if l.Err != nil {
				t.Fatal(l.Err)
			}
			if gw := l.Device.Gateway != nil && *l.Device.Gateway; gw != tt.wantGateway {
				t.Errorf("gateway: got %v, want %v", gw, tt.wantGateway)
			}
			if p := l.Device.Parent; (p == nil && tt.wantParent != "") || (p != nil && *p != tt.wantParent) {
				t.Errorf("parent: got %v, want %q", p, tt.wantParent)
			}
		})
	}
}
