package charttest

import (
	"testing"

	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/lint"
	"helm.sh/helm/v3/pkg/lint/support"
)

// lintKubeVersion is the oldest Kubernetes the chart supports (Chart.yaml kubeVersion);
// lint checks the rendered API versions against it for deprecations and removals.
var lintKubeVersion = &chartutil.KubeVersion{Version: "v1.30.0", Major: "1", Minor: "30"}

// TestLint runs Helm's own linter (what `helm lint` runs) with the defaults and every
// ci/*-values.yaml. Errors fail; warnings fail too, because a warning today (a
// deprecated API, a bad name) is an install failure on a later cluster.
func TestLint(t *testing.T) {
	for _, vc := range valuesCases(t) {
		t.Run(vc.name, func(t *testing.T) {
			l := lint.AllWithKubeVersion(chartDir, mustUserValues(t, vc), namespace, lintKubeVersion)
			for _, m := range l.Messages {
				switch {
				case m.Severity >= support.WarningSev:
					t.Errorf("lint: %s", m)
				default:
					t.Logf("lint: %s", m)
				}
			}
		})
	}
}
