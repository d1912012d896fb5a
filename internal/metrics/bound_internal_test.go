package metrics

import (
	"strconv"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func TestStatusClassAsBefore(t *testing.T) {
	for _, status := range []int{0, 99, 100, 101, 199, 200, 204, 299, 301, 404, 429, 500, 503, 599, 600, 999, -1} {
		want := "other"
		if status >= 100 && status <= 599 {
			want = strconv.Itoa(status/100) + "xx" // the label as it was before the table
		}
		if got := statusClass(status); got != want {
			t.Errorf("statusClass(%d): got %q, want %q", status, got, want)
		}
	}
}

// TestBoundChildrenAreTheVectors: the bound children count into the vector's own
// series, one series per label set, also when bound concurrently.
func TestBoundChildrenAreTheVectors(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := New(reg)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 100 {
				m.TokenRequest("hub-a", "iothub", "issued")
				m.TokenRequest("hub-b", "", "not_found")
			}
		})
	}
	wg.Wait()
	got := map[string]float64{}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "tokensvc_tokens_issued_total" {
			continue
		}
		for _, s := range mf.GetMetric() {
			key := ""
			for _, l := range s.GetLabel() {
				key += l.GetName() + "=" + l.GetValue() + ","
			}
			got[key] = s.GetCounter().GetValue()
		}
	}
	want := map[string]float64{
		"hub=hub-a,kind=iothub,outcome=issued,":     800,
		"hub=hub-b,kind=unknown,outcome=not_found,": 800,
	}
	if len(got) != len(want) {
		t.Errorf("series: got %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: got %v, want %v", k, got[k], v)
		}
	}
}
