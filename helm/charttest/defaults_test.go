package charttest

import (
	"testing"

	appsv1 "k8s.io/api/apps/v1"
)

// TestDefaults pins what an install without values must give: the Vault store with
// Kubernetes auth, two or more replicas spread over nodes and zones, a zero-downtime
// rolling update, a disruption budget, and the optional features off.
func TestDefaults(t *testing.T) {
	c := mustLoadChart(t)
	r := mustRender(t, c, valuesCase{name: "default"})
	o := mustDecode(t, r)
	d := o.deployment
	pod := d.Spec.Template.Spec

	if d.Spec.Replicas == nil || *d.Spec.Replicas < 2 {
		t.Errorf("replicas: got %v, want at least 2", deref(d.Spec.Replicas))
	}
	if s := d.Spec.Strategy; s.Type != appsv1.RollingUpdateDeploymentStrategyType || s.RollingUpdate == nil ||
		s.RollingUpdate.MaxUnavailable.IntValue() != 0 || s.RollingUpdate.MaxSurge.IntValue() < 1 {
		t.Errorf("strategy: got %+v, want RollingUpdate with maxUnavailable 0 and a surge", s)
	}
	keys := map[string]bool{}
	for _, tsc := range pod.TopologySpreadConstraints {
		keys[tsc.TopologyKey] = true
	}
	if !keys["kubernetes.io/hostname"] || !keys["topology.kubernetes.io/zone"] {
		t.Errorf("topology spread keys: got %v, want hostname and zone", keys)
	}
	for k, want := range map[string]string{
		"TOKENSVC_STORE":            "vault",
		"TOKENSVC_VAULT_AUTH":       "kubernetes",
		"TOKENSVC_VAULT_K8S_ROLE":   "tokensvc",
		"TOKENSVC_SHUTDOWN_TIMEOUT": "20s",
		"TOKENSVC_ADDR":             ":8080",
	} {
		if got := o.configMap.Data[k]; got != want {
			t.Errorf("setting %s: got %q, want %q", k, got, want)
		}
	}
	if pod.AutomountServiceAccountToken == nil || !*pod.AutomountServiceAccountToken {
		t.Errorf("automountServiceAccountToken: got %v, want true for the default Kubernetes auth", deref(pod.AutomountServiceAccountToken))
	}
	if o.serviceAccount == nil || o.serviceAccount.Name != "tokensvc" {
		t.Errorf("ServiceAccount: got %v, want a dedicated one named tokensvc (the README's Vault role binds it)", o.serviceAccount)
	} else if o.serviceAccount.AutomountServiceAccountToken == nil || *o.serviceAccount.AutomountServiceAccountToken {
		t.Error("ServiceAccount automountServiceAccountToken: got unset or true, want false (the pod opts in)")
	}
	if got := pod.Containers[0].ReadinessProbe.HTTPGet.Path; got != "/readyz" {
		t.Errorf("readiness path: got %q, want /readyz", got)
	}
	if o.pdb == nil {
		t.Error("PodDisruptionBudget: got none, want one")
	}
	for name, got := range map[string]bool{
		"HorizontalPodAutoscaler": o.hpa != nil,
		"NetworkPolicy":           o.networkPolicy != nil,
		"ServiceMonitor":          o.serviceMonitor != nil,
		"Ingress":                 o.ingress != nil,
		"PersistentVolumeClaim":   o.pvc != nil,
	} {
		if got {
			t.Errorf("%s: got one by default, want it opt-in", name)
		}
	}
}
