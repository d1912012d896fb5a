package storm

import (
	"testing"
	"time"

	"github.com/tokensvc/tokensvc/tools/tokenbench/bench"
)

func TestBreakdown(t *testing.T) {
	dev, err := bench.NewKeyDevice("dev-1")
	if err != nil {
		t.Fatal(err)
	}
	us := func(n int) bench.Micros { return bench.Micros(time.Duration(n) * time.Microsecond) }
	for _, tc := range []struct {
		name    string
		results []Result
		wantNil bool
	}{
		{"no baseline", []Result{{ServerCPUPerDevice: us(500)}}, true},
		{"baseline without server CPU", []Result{{}, {ServerCPUPerDevice: us(500)}}, true},
		{"both", []Result{{ServerCPUPerDevice: us(350)}, {ServerCPUPerDevice: us(500)}}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := breakdown(Report{Results: tc.results}, dev, "tokensvc")
			if err != nil {
				t.Fatal(err)
			}
			if (b == nil) != tc.wantNil {
				t.Fatalf("got %+v, want nil: %v", b, tc.wantNil)
			}
			if b == nil {
				return
			}
			if b.ES256Verify <= 0 {
				t.Errorf("ES256 verification: got %v, want a positive CPU time", b.ES256Verify)
			}
			if got, want := b.NonCrypto, us(150)-b.ES256Verify; got != want {
				t.Errorf("rest: got %v, want 500 - 350 - %v = %v", got, b.ES256Verify, want)
			}
		})
	}
}
