package httpapi_test

import (
	"strings"
	"testing"

	"github.com/tokensvc/tokensvc/internal/domain"
	"github.com/tokensvc/tokensvc/internal/httpapi"
)

// FuzzImportParser feeds arbitrary NDJSON and CSV bodies to the import parser: it must
// never panic, report lines in increasing order, and pass on only devices whose ID and
// hub the spec allows.
func FuzzImportParser(f *testing.F) {
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
		lines, _ := httpapi.ParseImport(ct, []byte(body))
		prev := 0
		for _, l := range lines {
			if l.Line <= prev {
				t.Fatalf("line numbers not increasing: %d after %d", l.Line, prev)
			}
			prev = l.Line
			if l.Err == nil && (!domain.ValidID(l.DeviceID) || l.Hub == "") {
				t.Fatalf("line %d passed with device %q hub %q", l.Line, l.DeviceID, l.Hub)
			}
		}
	})
}
