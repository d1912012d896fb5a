package bench

import (
	"strings"
	"testing"
)

func TestParseVmHWM(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    int64
		wantErr bool
	}{
		{"status file", "Name:\ttokensvc\nVmPeak:\t 1300000 kB\nVmHWM:\t   30820 kB\nVmRSS:\t   30000 kB\n", 30820 << 10, false},
		{"missing", "Name:\tx\n", 0, true},
		{"odd unit", "VmHWM:\t 12 MB\n", 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseVmHWM(strings.NewReader(tt.in))
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Errorf("got %d, %v; want %d, err %v", got, err, tt.want, tt.wantErr)
			}
		})
	}
	if n, err := PeakRSS(0); err != nil || n <= 0 {
		t.Errorf("own peak RSS: got %d, %v", n, err)
	}
}
