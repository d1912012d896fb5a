package charttest

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

// apiTypes are the only kinds the chart may render, each with the Go type it must decode
// into: the function makes a new one and keeps it in its field of o. A new kind in the
// chart fails the tests until it is added here.
var apiTypes = map[string]func(o *objects) any{
	"v1/ConfigMap":                            func(o *objects) any { o.configMap = &corev1.ConfigMap{}; return o.configMap },
	"v1/Service":                              func(o *objects) any { o.service = &corev1.Service{}; return o.service },
	"v1/ServiceAccount":                       func(o *objects) any { o.serviceAccount = &corev1.ServiceAccount{}; return o.serviceAccount },
	"v1/PersistentVolumeClaim":                func(o *objects) any { o.pvc = &corev1.PersistentVolumeClaim{}; return o.pvc },
	"apps/v1/Deployment":                      func(o *objects) any { o.deployment = &appsv1.Deployment{}; return o.deployment },
	"policy/v1/PodDisruptionBudget":           func(o *objects) any { o.pdb = &policyv1.PodDisruptionBudget{}; return o.pdb },
	"autoscaling/v2/HorizontalPodAutoscaler":  func(o *objects) any { o.hpa = &autoscalingv2.HorizontalPodAutoscaler{}; return o.hpa },
	"networking.k8s.io/v1/NetworkPolicy":      func(o *objects) any { o.networkPolicy = &networkingv1.NetworkPolicy{}; return o.networkPolicy },
	"networking.k8s.io/v1/Ingress":            func(o *objects) any { o.ingress = &networkingv1.Ingress{}; return o.ingress },
	"monitoring.coreos.com/v1/ServiceMonitor": func(o *objects) any { o.serviceMonitor = &monitoringv1.ServiceMonitor{}; return o.serviceMonitor },
}

// strictDecode converts one YAML document to JSON, refusing duplicate keys, and decodes
// it into obj the way the API server's strict field validation does: field names are
// case-sensitive and any unknown or duplicate field is an error. Plain encoding/json
// would match "ServiceAccountname" to serviceAccountName and drop unknown fields.
func strictDecode(doc []byte, obj any) error {
	j, err := yaml.YAMLToJSONStrict(doc)
	if err != nil {
		return fmt.Errorf("yaml: %w", err)
	}
	strictErrs, err := kjson.UnmarshalStrict(j, obj)
	if err != nil {
		return err
	}
	return errors.Join(strictErrs...)
}

// objects are one install's manifests decoded into their API types.
type objects struct {
	all []decodedObject

	configMap      *corev1.ConfigMap
	service        *corev1.Service
	serviceAccount *corev1.ServiceAccount
	pvc            *corev1.PersistentVolumeClaim
	deployment     *appsv1.Deployment
	pdb            *policyv1.PodDisruptionBudget
	hpa            *autoscalingv2.HorizontalPodAutoscaler
	networkPolicy  *networkingv1.NetworkPolicy
	ingress        *networkingv1.Ingress
	serviceMonitor *monitoringv1.ServiceMonitor
}

// decodedObject is one decoded manifest with its type and metadata.
type decodedObject struct {
	source     string
	apiVersion string
	kind       string
	meta       metav1.Object
	obj        any
}

// mustDecode decodes every manifest of r strictly into its API type. The chart renders
// at most one object of each kind.
func mustDecode(tb testing.TB, r rendered) objects {
	tb.Helper()
	var o objects
	seen := map[string]string{}
	for _, d := range r.docs {
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal([]byte(d.body), &tm); err != nil {
			tb.Fatalf("%s: read apiVersion and kind: %v", d.source, err)
		}
		key := tm.APIVersion + "/" + tm.Kind
		newObj, ok := apiTypes[key]
		if !ok {
			tb.Fatalf("%s: got kind %s, want one of the kinds the tests know (add it to apiTypes)", d.source, key)
		}
		if prev, dup := seen[key]; dup {
			tb.Fatalf("%s: second %s (first in %s)", d.source, key, prev)
		}
		seen[key] = d.source
		obj := newObj(&o)
		if err := strictDecode([]byte(d.body), obj); err != nil {
			tb.Fatalf("%s: strict decode into %T: %v", d.source, obj, err)
		}
		meta, ok := obj.(metav1.Object)
		if !ok {
			tb.Fatalf("%s: %T has no ObjectMeta", d.source, obj)
		}
		o.all = append(o.all, decodedObject{source: d.source, apiVersion: tm.APIVersion, kind: tm.Kind, meta: meta, obj: obj})
	}
	for name, got := range map[string]bool{"Deployment": o.deployment != nil, "ConfigMap": o.configMap != nil, "Service": o.service != nil} {
		if !got {
			tb.Fatalf("no %s rendered, want one", name)
		}
	}
	return o
}

// recommendedLabels are Kubernetes' recommended labels plus Helm's chart label.
var recommendedLabels = []string{
	"app.kubernetes.io/name",
	"app.kubernetes.io/instance",
	"app.kubernetes.io/version",
	"app.kubernetes.io/component",
	"app.kubernetes.io/part-of",
	"app.kubernetes.io/managed-by",
	"helm.sh/chart",
}

// TestStrictDecode decodes every rendered object of every values case into its
// Kubernetes API type with unknown fields failing, and checks the metadata the API
// server would check: names, namespaces and label syntax, plus the recommended labels.
func TestStrictDecode(t *testing.T) {
	c := mustLoadChart(t)
	for _, vc := range valuesCases(t) {
		t.Run(vc.name, func(t *testing.T) {
			o := mustDecode(t, mustRender(t, c, vc))
			for _, d := range o.all {
				m := d.meta
				if errs := validation.IsDNS1123Subdomain(m.GetName()); len(errs) > 0 {
					t.Errorf("%s: name %q: %s", d.source, m.GetName(), strings.Join(errs, "; "))
				}
				if d.kind == "Service" || d.kind == "Deployment" {
					// Service names become DNS labels; Deployment names prefix pod names.
					if errs := validation.IsDNS1123Label(m.GetName()); len(errs) > 0 {
						t.Errorf("%s: name %q: %s", d.source, m.GetName(), strings.Join(errs, "; "))
					}
				}
				if got := m.GetNamespace(); got != namespace {
					t.Errorf("%s: got namespace %q, want %q", d.source, got, namespace)
				}
				checkLabels(t, d.source, m.GetLabels())
				for _, l := range recommendedLabels {
					if m.GetLabels()[l] == "" {
						t.Errorf("%s %s: got no label %s, want it", d.kind, m.GetName(), l)
					}
				}
			}
			checkLabels(t, "pod template", o.deployment.Spec.Template.Labels)
		})
	}
}

func checkLabels(tb testing.TB, where string, labels map[string]string) {
	tb.Helper()
	for k, v := range labels {
		if errs := validation.IsQualifiedName(k); len(errs) > 0 {
			tb.Errorf("%s: label key %q: %s", where, k, strings.Join(errs, "; "))
		}
		if errs := validation.IsValidLabelValue(v); len(errs) > 0 {
			tb.Errorf("%s: label %s=%q: %s", where, k, v, strings.Join(errs, "; "))
		}
	}
}

// TestStrictDecodeRejects proves the decoder is as strict as the tests claim: each
// mistake below is accepted by a plain YAML or JSON decode but must fail here.
func TestStrictDecodeRejects(t *testing.T) {
	const good = `apiVersion: apps/v1
kind: Deployment
metadata:
  name: tokensvc
spec:
  replicas: 2
  template:
    spec:
      serviceAccountName: tokensvc
      containers:
        - name: tokensvc
          image: tokensvc:1
          resources:
            limits:
              memory: 256Mi
`
	if err := strictDecode([]byte(good), &appsv1.Deployment{}); err != nil {
		t.Fatalf("good Deployment: got %v, want no error", err)
	}
	tests := []struct {
		name    string
		old     string // replaced in good
		new     string
		wantErr string
	}{
		{"unknown field", "  replicas: 2\n", "  replicas: 2\n  replica: 3\n", `unknown field "spec.replica"`},
		{"misspelt case", "serviceAccountName:", "serviceAccountname:", `unknown field "spec.template.spec.serviceAccountname"`},
		{"duplicate key", "  replicas: 2\n", "  replicas: 2\n  replicas: 3\n", "already set"},
		{"wrong type", "replicas: 2", `replicas: "2"`, "cannot unmarshal string"},
		{"bad quantity", "memory: 256Mi", "memory: 256MB", "quantities must match"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			doc := strings.Replace(good, tt.old, tt.new, 1)
			if doc == good {
				t.Fatalf("replacement %q not found", tt.old)
			}
			err := strictDecode([]byte(doc), &appsv1.Deployment{})
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("got error %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}
