package charttest

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/engine"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden.yaml from the current chart")

const (
	chartDir    = "../tokensvc"
	releaseName = "tokensvc"
	namespace   = "iot"
)

// valuesCase is one way of installing the chart: the defaults, or the defaults overlaid
// with one of the chart's ci/<name>-values.yaml files.
type valuesCase struct {
	name string // golden file testdata/<name>.golden.yaml
	file string // path of the values file; empty for the defaults
}

// valuesCases lists the defaults and every ci/*-values.yaml, so a new example values file
// is rendered, decoded, checked and golden-tested without touching the tests.
func valuesCases(tb testing.TB) []valuesCase {
	tb.Helper()
	files, err := filepath.Glob(filepath.Join(chartDir, "ci", "*-values.yaml"))
	if err != nil {
		tb.Fatal(err)
	}
	if len(files) == 0 {
		tb.Fatalf("no values files in %s/ci", chartDir)
	}
	cases := []valuesCase{{name: "default"}}
	for _, f := range files {
		cases = append(cases, valuesCase{name: strings.TrimSuffix(filepath.Base(f), "-values.yaml"), file: f})
	}
	return cases
}

// mustLoadChart loads the chart directory the way helm install does.
func mustLoadChart(tb testing.TB) *chart.Chart {
	tb.Helper()
	c, err := loader.Load(chartDir)
	if err != nil {
		tb.Fatalf("load chart: %v", err)
	}
	return c
}

// mustUserValues reads the case's values file; the defaults case has none.
func mustUserValues(tb testing.TB, vc valuesCase) map[string]any {
	tb.Helper()
	if vc.file == "" {
		return map[string]any{}
	}
	v, err := chartutil.ReadValuesFile(vc.file)
	if err != nil {
		tb.Fatalf("read %s: %v", vc.file, err)
	}
	return v
}

// mustParseValues parses a YAML values document written inline in a test.
func mustParseValues(tb testing.TB, doc string) map[string]any {
	tb.Helper()
	v, err := chartutil.ReadValues([]byte(doc))
	if err != nil {
		tb.Fatalf("parse values %q: %v", doc, err)
	}
	return v
}

// renderValues merges user values over the chart's defaults and checks the result
// against values.schema.json, exactly as helm install does.
func renderValues(c *chart.Chart, user map[string]any) (chartutil.Values, error) {
	opts := chartutil.ReleaseOptions{Name: releaseName, Namespace: namespace, Revision: 1, IsInstall: true}
	return chartutil.ToRenderValues(c, user, opts, chartutil.DefaultCapabilities)
}

// render validates user values and renders every template. The engine runs in strict
// mode: a template that reads a value the chart does not define is an error, not "".
func render(c *chart.Chart, user map[string]any) (map[string]string, chartutil.Values, error) {
	vals, err := renderValues(c, user)
	if err != nil {
		return nil, nil, err
	}
	out, err := engine.Engine{Strict: true}.Render(c, vals)
	if err != nil {
		return nil, nil, err
	}
	return out, vals, nil
}

// rendered is the output of one install: its manifests in file order and its notes.
type rendered struct {
	docs   []manifest
	notes  string
	values chartutil.Values // the merged values the chart saw
}

// manifest is one YAML document and the template it came from.
type manifest struct {
	source string // e.g. tokensvc/templates/deployment.yaml
	body   string
}

var docSeparator = regexp.MustCompile(`(?m)^---[ \t]*$`)

// mustRender renders the chart for vc and splits the output into documents, skipping
// templates that rendered to nothing (disabled features, helpers).
func mustRender(tb testing.TB, c *chart.Chart, vc valuesCase) rendered {
	tb.Helper()
	out, vals, err := render(c, mustUserValues(tb, vc))
	if err != nil {
		tb.Fatalf("render %s: %v", vc.name, err)
	}
	var r rendered
	r.values = vals["Values"].(chartutil.Values)
	names := make([]string, 0, len(out))
	for name := range out {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		body := out[name]
		if strings.HasSuffix(name, "NOTES.txt") {
			r.notes = body
			continue
		}
		for _, doc := range docSeparator.Split(body, -1) {
			if strings.TrimSpace(doc) == "" {
				continue
			}
			r.docs = append(r.docs, manifest{source: name, body: strings.TrimSpace(doc) + "\n"})
		}
	}
	if len(r.docs) == 0 {
		tb.Fatalf("render %s: no manifests", vc.name)
	}
	return r
}

// valueAt reads a dotted path from the merged values, e.g. "vault.auth.method".
func valueAt(tb testing.TB, v chartutil.Values, path string) any {
	tb.Helper()
	got, err := v.PathValue(path)
	if err != nil {
		tb.Fatalf("values %s: %v", path, err)
	}
	return got
}

// mustInt reads a whole number from the merged values. YAML numbers arrive as float64
// (Helm decodes values through JSON), as int64 or as json.Number depending on the path.
func mustInt(tb testing.TB, v chartutil.Values, path string) int64 {
	tb.Helper()
	switch n := valueAt(tb, v, path).(type) {
	case float64:
		return int64(n)
	case int64:
		return n
	case int:
		return int64(n)
	case json.Number:
		i, err := n.Int64()
		if err != nil {
			tb.Fatalf("values %s: %v", path, err)
		}
		return i
	default:
		tb.Fatalf("values %s: got %T, want a number", path, n)
		return 0
	}
}

// yamlOf formats the rendered output the way `helm template` does, with the notes as a
// trailing comment so that changes to them show up in the golden files too.
func (r rendered) yamlOf(vc valuesCase) []byte {
	var b strings.Builder
	from := "the chart's default values"
	if vc.file != "" {
		from = "default values + " + filepath.ToSlash(strings.TrimPrefix(vc.file, "../"))
	}
	fmt.Fprintf(&b, "# Rendered from %s (release %q, namespace %q).\n", from, releaseName, namespace)
	b.WriteString("# Generated by TestGolden; refresh with: cd helm/charttest && go test -run TestGolden -update\n")
	for _, d := range r.docs {
		fmt.Fprintf(&b, "---\n# Source: %s\n%s", d.source, d.body)
	}
	b.WriteString("# NOTES.txt:\n")
	for line := range strings.SplitSeq(strings.TrimRight(r.notes, "\n"), "\n") {
		b.WriteString(strings.TrimRight("# "+line, " ") + "\n")
	}
	return []byte(b.String())
}

// mustReadFile reads a file relative to this directory.
func mustReadFile(tb testing.TB, path string) []byte {
	tb.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}
