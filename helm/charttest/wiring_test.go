package charttest

import (
	"maps"
	"net/url"
	"os"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// TestWiring checks that the rendered objects refer to each other correctly, which
// neither Helm nor a strict decode notices: selectors that match the pods, ports and
// names that exist, the volumes every mount needs.
func TestWiring(t *testing.T) {
	forEachInstall(t, func(t *testing.T, in install) {
		checkSelectors(t, in)
		checkReplicas(t, in)
		checkReferences(t, in)
		checkNetworkPolicy(t, in)
	})
}

// subset reports whether every label in sel is on labels with the same value.
func subset(sel, labels map[string]string) bool {
	for k, v := range sel {
		if labels[k] != v {
			return false
		}
	}
	return len(sel) > 0
}

func checkSelectors(tb testing.TB, in install) {
	tb.Helper()
	d := in.deployment
	podLabels := d.Spec.Template.Labels
	sel := d.Spec.Selector.MatchLabels
	wantSel := map[string]string{"app.kubernetes.io/name": "tokensvc", "app.kubernetes.io/instance": releaseName}
	if !maps.Equal(sel, wantSel) {
		tb.Errorf("Deployment selector: got %v, want %v (stable across upgrades)", sel, wantSel)
	}
	if !subset(sel, podLabels) {
		tb.Errorf("Deployment selector %v does not match pod labels %v", sel, podLabels)
	}
	if !subset(in.service.Spec.Selector, podLabels) {
		tb.Errorf("Service selector %v does not match pod labels %v", in.service.Spec.Selector, podLabels)
	}
	if in.pdb != nil && !subset(in.pdb.Spec.Selector.MatchLabels, podLabels) {
		tb.Errorf("PodDisruptionBudget selector %v does not match pod labels %v", in.pdb.Spec.Selector.MatchLabels, podLabels)
	}
	if in.networkPolicy != nil && !subset(in.networkPolicy.Spec.PodSelector.MatchLabels, podLabels) {
		tb.Errorf("NetworkPolicy podSelector %v does not match pod labels %v", in.networkPolicy.Spec.PodSelector.MatchLabels, podLabels)
	}
	for _, tsc := range in.pod.TopologySpreadConstraints {
		if tsc.LabelSelector == nil || !subset(tsc.LabelSelector.MatchLabels, podLabels) {
			tb.Errorf("topology spread %s: selector %v does not match pod labels", tsc.TopologyKey, tsc.LabelSelector)
		}
	}
	if sm := in.serviceMonitor; sm != nil {
		if !subset(sm.Spec.Selector.MatchLabels, in.service.Labels) {
			tb.Errorf("ServiceMonitor selector %v does not match Service labels %v", sm.Spec.Selector.MatchLabels, in.service.Labels)
		}
		if !slices.Contains(sm.Spec.NamespaceSelector.MatchNames, namespace) {
			tb.Errorf("ServiceMonitor namespaces: got %v, want %s", sm.Spec.NamespaceSelector.MatchNames, namespace)
		}
		for _, ep := range sm.Spec.Endpoints {
			if servicePort(in.service, ep.Port) == nil {
				tb.Errorf("ServiceMonitor port %q: not a Service port", ep.Port)
			}
		}
	}
}

func servicePort(svc *corev1.Service, name string) *corev1.ServicePort {
	for i, p := range svc.Spec.Ports {
		if p.Name == name {
			return &svc.Spec.Ports[i]
		}
	}
	return nil
}

func checkReplicas(tb testing.TB, in install) {
	tb.Helper()
	d := in.deployment
	embedded := in.str(tb, "store") == "embedded"
	switch {
	case embedded:
		if d.Spec.Replicas == nil || *d.Spec.Replicas != 1 {
			tb.Errorf("embedded store replicas: got %v, want 1", deref(d.Spec.Replicas))
		}
		if d.Spec.Strategy.Type != appsv1.RecreateDeploymentStrategyType {
			tb.Errorf("embedded store strategy: got %q, want Recreate (one process owns the file)", d.Spec.Strategy.Type)
		}
		if in.hpa != nil {
			tb.Error("embedded store: got a HorizontalPodAutoscaler, want none")
		}
		if in.pvc == nil && in.str(tb, "embedded.persistence.existingClaim") == "" {
			tb.Error("embedded store: got no PersistentVolumeClaim, want one")
		}
	case in.hpa != nil:
		if d.Spec.Replicas != nil {
			tb.Errorf("with an autoscaler: got replicas %d, want unset so upgrades do not reset the scale", *d.Spec.Replicas)
		}
		ref := in.hpa.Spec.ScaleTargetRef
		if ref.Kind != "Deployment" || ref.Name != d.Name || ref.APIVersion != "apps/v1" {
			tb.Errorf("HPA target: got %+v, want apps/v1 Deployment %s", ref, d.Name)
		}
		if in.hpa.Spec.MinReplicas == nil || *in.hpa.Spec.MinReplicas < 2 {
			tb.Errorf("HPA minReplicas: got %v, want at least 2", deref(in.hpa.Spec.MinReplicas))
		}
	default:
		if want := int32(mustInt(tb, in.values, "replicaCount")); d.Spec.Replicas == nil || *d.Spec.Replicas != want {
			tb.Errorf("replicas: got %v, want %d", deref(d.Spec.Replicas), want)
		}
	}
	if !embedded {
		s := d.Spec.Strategy
		if s.Type != appsv1.RollingUpdateDeploymentStrategyType || s.RollingUpdate == nil {
			tb.Fatalf("strategy: got %+v, want RollingUpdate", s)
		}
		if s.RollingUpdate.MaxUnavailable == nil {
			tb.Error("rolling update maxUnavailable: got unset (25%), want it explicit")
		}
	}
}

func checkReferences(tb testing.TB, in install) {
	tb.Helper()
	ctr := in.pod.Containers[0]
	// Service → container port.
	for _, p := range in.service.Spec.Ports {
		if p.TargetPort.Type != intstr.String || containerPort(ctr, p.TargetPort.StrVal) == 0 {
			tb.Errorf("Service port %s: targetPort %s is not a named container port", p.Name, p.TargetPort.String())
		}
	}
	// Ingress → Service.
	if ing := in.ingress; ing != nil {
		for _, rule := range ing.Spec.Rules {
			for _, p := range rule.HTTP.Paths {
				b := p.Backend.Service
				if b == nil || b.Name != in.service.Name || servicePort(in.service, b.Port.Name) == nil {
					tb.Errorf("Ingress %s%s: backend %+v, want Service %s by port name", rule.Host, p.Path, b, in.service.Name)
				}
			}
		}
	}
	// Pod → ConfigMap and ServiceAccount.
	for _, ef := range ctr.EnvFrom {
		if ef.ConfigMapRef != nil && ef.ConfigMapRef.Name != in.configMap.Name {
			tb.Errorf("envFrom ConfigMap %s: got no such ConfigMap rendered (have %s)", ef.ConfigMapRef.Name, in.configMap.Name)
		}
	}
	if in.serviceAccount != nil && in.pod.ServiceAccountName != in.serviceAccount.Name {
		tb.Errorf("pod serviceAccountName: got %q, want the chart's %q", in.pod.ServiceAccountName, in.serviceAccount.Name)
	}
	if in.deployment.Spec.Template.Annotations["checksum/config"] == "" {
		tb.Error("pod annotation checksum/config: got none, want one so settings changes roll the pods")
	}
	// Mounts → volumes, and the files the settings name → mounts.
	volumes := map[string]corev1.Volume{}
	for _, v := range in.pod.Volumes {
		volumes[v.Name] = v
	}
	mounts := map[string]string{}
	for _, m := range ctr.VolumeMounts {
		if _, ok := volumes[m.Name]; !ok {
			tb.Errorf("volumeMount %s: got no volume of that name", m.Name)
		}
		mounts[m.MountPath] = m.Name
	}
	for _, key := range []string{"TOKENSVC_TLS_CERT", "TOKENSVC_TLS_KEY", "VAULT_CACERT", "TOKENSVC_VAULT_SECRET_ID_FILE", "TOKENSVC_DATA_DIR", "TOKENSVC_REPLAY_STORE_PASSWORD_FILE", "TOKENSVC_REPLAY_STORE_CA"} {
		file, ok := in.settings[key]
		if !ok {
			continue
		}
		dir := file
		if key != "TOKENSVC_DATA_DIR" {
			dir = path.Dir(file)
		}
		if mounts[dir] == "" {
			tb.Errorf("%s=%s: got no volume mounted at %s, want one", key, file, dir)
		}
	}
	if v, ok := volumes["data"]; ok && in.pvc != nil && v.PersistentVolumeClaim.ClaimName != in.pvc.Name {
		tb.Errorf("data volume claim: got %q, want the chart's %q", v.PersistentVolumeClaim.ClaimName, in.pvc.Name)
	}
}

func checkNetworkPolicy(tb testing.TB, in install) {
	tb.Helper()
	np := in.networkPolicy
	if np == nil {
		return
	}
	if !slices.Equal(policyTypes(np.Spec.PolicyTypes), []string{"Egress", "Ingress"}) {
		tb.Errorf("NetworkPolicy policyTypes: got %v, want Ingress and Egress", np.Spec.PolicyTypes)
	}
	var ingressPorts []int
	for _, rule := range np.Spec.Ingress {
		for _, p := range rule.Ports {
			ingressPorts = append(ingressPorts, p.Port.IntValue())
		}
	}
	if !slices.Equal(ingressPorts, []int{8080}) {
		tb.Errorf("NetworkPolicy ingress ports: got %v, want only the service port 8080", ingressPorts)
	}
	if in.str(tb, "store") != "vault" {
		return
	}
	u, err := url.Parse(in.settings["VAULT_ADDR"])
	if err != nil {
		tb.Fatal(err)
	}
	want := u.Port()
	if want == "" {
		want = map[string]string{"https": "443", "http": "80"}[u.Scheme]
	}
	for _, rule := range np.Spec.Egress {
		for _, p := range rule.Ports {
			if strconv.Itoa(p.Port.IntValue()) == want {
				return
			}
		}
	}
	tb.Errorf("NetworkPolicy egress: got no rule for Vault's port %s (%s)", want, in.settings["VAULT_ADDR"])
}

func policyTypes[T ~string](ts []T) []string {
	out := make([]string, len(ts))
	for i, t := range ts {
		out[i] = string(t)
	}
	slices.Sort(out)
	return out
}

// serviceSettingRE finds environment variable names: quoted in Go, or in backticks in
// the README's configuration table.
var serviceSettingRE = regexp.MustCompile("[\"`]((?:TOKENSVC|VAULT)_[A-Z0-9_]+)[\"`]")

// TestSettingsExistInService checks every TOKENSVC_* and VAULT_* variable the chart sets
// against the README's configuration table, which cmd/tokensvc/config_test.go holds
// equal to the flags and variables the service reads (their names are derived from the
// flag names, so no source file spells them all out). A misspelt setting fails here
// instead of being silently ignored by the service.
func TestSettingsExistInService(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatalf("read the README: %v", err)
	}
	_, table, ok := strings.Cut(string(readme), "\n## Configuration\n")
	if !ok {
		t.Fatal("the README has no ## Configuration section")
	}
	table, _, _ = strings.Cut(table, "\n## ")
	known := map[string]bool{}
	for _, m := range serviceSettingRE.FindAllStringSubmatch(table, -1) {
		known[m[1]] = true
	}
	if !known["TOKENSVC_STORE"] || !known["VAULT_ADDR"] || !known["TOKENSVC_ADMIN_TOKEN"] {
		t.Fatalf("found %d settings in the README's configuration table, want TOKENSVC_STORE, VAULT_ADDR and TOKENSVC_ADMIN_TOKEN among them", len(known))
	}
	c := mustLoadChart(t)
	for _, vc := range valuesCases(t) {
		t.Run(vc.name, func(t *testing.T) {
			o := mustDecode(t, mustRender(t, c, vc))
			names := slices.Collect(maps.Keys(o.configMap.Data))
			for _, e := range o.deployment.Spec.Template.Spec.Containers[0].Env {
				names = append(names, e.Name)
			}
			for _, n := range names {
				if serviceSettingRE.MatchString(strconv.Quote(n)) && !known[n] {
					t.Errorf("chart sets %s: got no such setting in the README's configuration table (the service's flags)", n)
				}
			}
		})
	}
}
