package audit

import (
	"bytes"
	"encoding/json"
	"math"
	"testing"
	"time"
)

// checkLikeJSON fails t unless Logger's encoding of r is encoding/json's, byte for
// byte, and returns whether the plain encoder (not the fallback) wrote it.
func checkLikeJSON(t *testing.T, r Record) bool {
	t.Helper()
	want, wantErr := json.Marshal(&r)
	got, ok := appendRecord(nil, &r)
	if !ok {
		got, wantErr = marshalRecord(nil, r)
	}
	if wantErr != nil {
		if ok {
			t.Fatalf("encoding/json refuses %+v (%v), the plain encoder wrote %s", r, wantErr, got)
		}
		return false
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("record %+v:\n got %s\nwant %s", r, got, want)
	}
	return ok
}

func TestAppendRecordLikeJSON(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 123456789, time.UTC)
	exp := at.Add(time.Hour)
	expZone := exp.In(time.FixedZone("x", -(5*3600 + 30*60)))
	farZone := exp.In(time.FixedZone("far", 24*3600))
	yearOut := time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		name  string
		r     Record
		plain bool // the plain encoder writes it (else encoding/json)
	}{
		{"token issued", Record{Time: at, Event: "getToken", Actor: "d1", Device: "d1", Hub: "h1", ExpiresAt: &exp, Outcome: "issued", RequestID: "host/abc-000001"}, true},
		{"operator change", Record{Time: at, Event: "deleteHub", Actor: "admin", Role: "admin", Hub: "h1", Outcome: "success", Status: 204}, true},
		{"every field", Record{Time: at, Event: "e", Actor: "a", Role: "r", Device: "d", Gateway: "g", Module: "m", Hub: "h", ExpiresAt: &exp, Serial: "0a1b", Outcome: "o", Status: -3, RequestID: "q"}, true},
		{"empty", Record{}, true},
		{"expiry in a zone", Record{Time: at, Event: "e", ExpiresAt: &expZone}, true},
		{"zone offset 24 h", Record{Time: at, Event: "e", ExpiresAt: &farZone}, false},
		{"year 10000", Record{Time: yearOut, Event: "e"}, false},
		{"html characters", Record{Time: at, Event: "a<b>&c"}, false},
		{"quote and backslash", Record{Time: at, Actor: `a"b\c`}, false},
		{"control character", Record{Time: at, Device: "a\nb"}, false},
		{"non-ASCII", Record{Time: at, Hub: "hüb"}, false},
		{"invalid UTF-8", Record{Time: at, RequestID: "\xff"}, false},
		{"line separator", Record{Time: at, Module: "a\u2028b"}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := checkLikeJSON(t, tc.r); got != tc.plain {
				t.Errorf("written by the plain encoder: %v, want %v", got, tc.plain)
			}
		})
	}
}

// FuzzAppendRecord holds the plain encoder to encoding/json: the same bytes whenever
// it writes a record, encoding/json's bytes (or error) when it does not.
func FuzzAppendRecord(f *testing.F) {
	f.Add("getToken", "d1", "", "d1", "", "", "h1", "", "issued", "host/x-000001", int64(1767322445123456789), int64(3600e9), 0, true, 0)
	f.Add("deleteHub", "admin", "admin", "", "", "", "h1", "0a", "success", "", int64(0), int64(0), 204, false, -19800)
	f.Add("e<", "a\"", "\\", "\n", "ü", "\xff", "\u2028", "&", ">", "", int64(math.MaxInt64), int64(-1), -1, true, 86400)
	f.Fuzz(func(t *testing.T, event, actor, role, device, gateway, module, hub, serial, outcome, requestID string, unixNano, ttl int64, status int, hasExp bool, zone int) {
		at := time.Unix(0, unixNano).UTC()
		r := Record{Time: at, Event: event, Actor: actor, Role: role, Device: device, Gateway: gateway, Module: module, Hub: hub, Serial: serial, Outcome: outcome, Status: status, RequestID: requestID}
		if hasExp {
			exp := time.Unix(0, unixNano).Add(time.Duration(ttl)).In(time.FixedZone("z", zone%(48*3600)))
			r.ExpiresAt = &exp
		}
		checkLikeJSON(t, r)
	})
}

func BenchmarkLog(b *testing.B) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 123456789, time.UTC)
	exp := at.Add(time.Hour)
	l := New(discard{}, nil, nil)
	b.ReportAllocs()
	for b.Loop() {
		l.Log(Record{Time: at, Event: "getToken", Actor: "device-000123", Device: "device-000123", Hub: "main", ExpiresAt: &exp, Outcome: "issued", RequestID: "host/AbCdEfGhIj-000042"})
	}
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }
