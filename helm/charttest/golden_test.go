package charttest

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestGolden compares the rendered chart with testdata/<case>.golden.yaml for the
// defaults and every ci/*-values.yaml. After an intended chart change, rerun with
// -update and review the diff of the golden files like any other code change.
func TestGolden(t *testing.T) {
	c := mustLoadChart(t)
	want := map[string]bool{}
	for _, vc := range valuesCases(t) {
		golden := filepath.Join("testdata", vc.name+".golden.yaml")
		want[golden] = true
		t.Run(vc.name, func(t *testing.T) {
			got := mustRender(t, c, vc).yamlOf(vc)
			if *update {
				if err := os.WriteFile(golden, got, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			wantBytes, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v; create it with: go test -run 'TestGolden/%s' -update", err, vc.name)
			}
			if !bytes.Equal(got, wantBytes) {
				t.Errorf("rendered chart differs from %s:\n%s\nIf the change is intended, run: cd helm/charttest && go test -run 'TestGolden/%s' -update, and review git diff %s",
					golden, diffHint(string(wantBytes), string(got)), vc.name, golden)
			}
		})
	}
	// A golden file whose values file is gone would otherwise rot unnoticed.
	files, err := filepath.Glob(filepath.Join("testdata", "*.golden.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if want[f] {
			continue
		}
		if *update {
			if err := os.Remove(f); err != nil {
				t.Fatal(err)
			}
			continue
		}
		t.Errorf("stale golden file %s has no values case; remove it or run -update", f)
	}
}

// diffHint shows where want and got first part ways, with a few lines of context
// around it, and how many lines differ in all: enough to see what changed without
// printing two whole manifests.
func diffHint(want, got string) string {
	w := strings.Split(want, "\n")
	g := strings.Split(got, "\n")
	first := 0
	for first < len(w) && first < len(g) && w[first] == g[first] {
		first++
	}
	// Trailing lines in common, so an insertion is not reported as a wall of changes.
	tail := 0
	for tail < len(w)-first && tail < len(g)-first && w[len(w)-1-tail] == g[len(g)-1-tail] {
		tail++
	}
	var b strings.Builder
	fmt.Fprintf(&b, "first difference at line %d (golden has %d lines, rendered %d):\n", first+1, len(w), len(g))
	from := max(0, first-3)
	for i := from; i < first; i++ {
		fmt.Fprintf(&b, "   %4d  %s\n", i+1, w[i])
	}
	const most = 20
	wEnd, gEnd := len(w)-tail, len(g)-tail
	for i := first; i < wEnd && i < first+most; i++ {
		fmt.Fprintf(&b, "-  %4d  %s\n", i+1, w[i])
	}
	for i := first; i < gEnd && i < first+most; i++ {
		fmt.Fprintf(&b, "+  %4d  %s\n", i+1, g[i])
	}
	if wEnd-first > most || gEnd-first > most {
		fmt.Fprintf(&b, "   … (%d golden and %d rendered lines differ in all)\n", wEnd-first, gEnd-first)
	}
	return b.String()
}

func TestDiffHint(t *testing.T) {
	tests := []struct {
		name      string
		want, got string
		contains  []string
	}{
		{
			name:     "changed line",
			want:     "a\nb\nc\nd\n",
			got:      "a\nb\nX\nd\n",
			contains: []string{"first difference at line 3", "-     3  c", "+     3  X", "      2  b"},
		},
		{
			name:     "inserted line",
			want:     "a\nb\nc\n",
			got:      "a\nb\nnew\nc\n",
			contains: []string{"first difference at line 3", "+     3  new"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := diffHint(tt.want, tt.got)
			for _, s := range tt.contains {
				if !strings.Contains(got, s) {
					t.Errorf("diffHint:\n%s\ngot no %q, want it", got, s)
				}
			}
			if strings.Contains(got, "-     4  c") {
				t.Errorf("diffHint:\n%s\nreports the common tail as changed", got)
			}
		})
	}
}
