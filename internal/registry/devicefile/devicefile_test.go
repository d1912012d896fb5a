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
