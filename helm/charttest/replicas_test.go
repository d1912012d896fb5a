package charttest

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

// noReplayStoreWarning starts the notes' warning about pods without a shared replay store.
const noReplayStoreWarning = "run without a shared replay store"

// mustRenderDoc renders the chart with an inline values document over the defaults.
func mustRenderDoc(tb testing.TB, doc string) (rendered, objects) {
	tb.Helper()
	f := filepath.Join(tb.TempDir(), "values.yaml")
	if err := os.WriteFile(f, []byte(doc), 0o600); err != nil {
		tb.Fatal(err)
	}
	r := mustRender(tb, mustLoadChart(tb), valuesCase{name: "inline", file: f})
	return r, mustDecode(tb, r)
}

// TestReplicasDefaults: with the Vault store the chart runs at least two pods spread
// over nodes, and — without a replay store configured — says in its notes what that
// allows.
func TestReplicasDefaults(t *testing.T) {
	r, o := mustRenderDoc(t, "{}")
	d := o.deployment
	if d.Spec.Replicas == nil || *d.Spec.Replicas < 2 {
		t.Errorf("default replicas with the Vault store: got %v, want at least 2", deref(d.Spec.Replicas))
	}
	var keys []string
	for _, tsc := range d.Spec.Template.Spec.TopologySpreadConstraints {
		keys = append(keys, tsc.TopologyKey)
	}
	if !slices.Contains(keys, "kubernetes.io/hostname") {
		t.Errorf("topology spread keys: got %v, want kubernetes.io/hostname among them (one node's loss takes one pod)", keys)
	}
	if !strings.Contains(r.notes, noReplayStoreWarning) || !strings.Contains(r.notes, "replayed once on each other pod") {
		t.Errorf("notes without a replay store: got\n%s\nwant the warning that assertions can be replayed on each other pod", r.notes)
	}
	if _, ok := o.configMap.Data["TOKENSVC_REPLAY_STORE"]; ok {
		t.Error("TOKENSVC_REPLAY_STORE set without replayStore.url")
	}
}

// TestReplayStoreValues: the warning appears exactly when more than one pod can run
// without a replay store; the URL, password file, CA and NetworkPolicy egress follow the
// values.
func TestReplayStoreValues(t *testing.T) {
	tests := []struct {
		name     string
		values   string
		wantWarn bool
		// wantSettings are ConfigMap entries that must be there with these values.
		wantSettings map[string]string
		wantEgress   int // a NetworkPolicy egress port for the replay store; 0 for none
	}{
		{name: "one replica, no warning", values: "replicaCount: 1"},
		{name: "three replicas", values: "replicaCount: 3", wantWarn: true},
		{name: "autoscaling", values: "autoscaling: {enabled: true, minReplicas: 2, maxReplicas: 6}", wantWarn: true},
		{
			name:   "embedded store, one pod by construction",
			values: "store: embedded\nreplicaCount: 1\nembedded: {masterKey: {existingSecret: mk}}",
		},
		{
			name:         "a plain replay store",
			values:       "replicaCount: 3\nreplayStore: {url: 'redis://redis.redis.svc:6379'}\nnetworkPolicy: {enabled: true}",
			wantSettings: map[string]string{"TOKENSVC_REPLAY_STORE": "redis://redis.redis.svc:6379"},
			wantEgress:   6379,
		},
		{
			name:   "TLS, password and CA",
			values: "replayStore: {url: 'rediss://tokensvc@valkey.db:6380/2', password: {existingSecret: valkey, key: pw}, caCert: {existingSecret: valkey-ca}}\nnetworkPolicy: {enabled: true}",
			wantSettings: map[string]string{
				"TOKENSVC_REPLAY_STORE":               "rediss://tokensvc@valkey.db:6380/2",
				"TOKENSVC_REPLAY_STORE_PASSWORD_FILE": "/etc/tokensvc/replay-store/password",
				"TOKENSVC_REPLAY_STORE_CA":            "/etc/tokensvc/replay-store-ca/ca.crt",
			},
			wantEgress: 6380,
		},
		{
			name:         "shared device limits",
			values:       "replayStore: {url: 'redis://redis', deviceLimits: true}",
			wantSettings: map[string]string{"TOKENSVC_REPLAY_STORE_DEVICE_LIMITS": "true"},
		},
		{
			name:         "no port in the URL",
			values:       "replayStore: {url: 'redis://redis'}\nnetworkPolicy: {enabled: true}",
			wantSettings: map[string]string{"TOKENSVC_REPLAY_STORE": "redis://redis"},
			wantEgress:   6379,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, o := mustRenderDoc(t, tt.values)
			if got := strings.Contains(r.notes, noReplayStoreWarning); got != tt.wantWarn {
				t.Errorf("notes warning: got %v, want %v\n%s", got, tt.wantWarn, r.notes)
			}
			for k, want := range tt.wantSettings {
				if got := o.configMap.Data[k]; got != want {
					t.Errorf("%s: got %q, want %q", k, got, want)
				}
			}
			if tt.wantEgress != 0 && !egressPort(o, tt.wantEgress) {
				t.Errorf("NetworkPolicy egress: got no rule for port %d", tt.wantEgress)
			}
			checkReplayStoreSecrets(t, o)
		})
	}
}

func egressPort(o objects, port int) bool {
	if o.networkPolicy == nil {
		return false
	}
	for _, rule := range o.networkPolicy.Spec.Egress {
		for _, p := range rule.Ports {
			if p.Port != nil && p.Port.IntValue() == port {
				return true
			}
		}
	}
	return false
}

// checkReplayStoreSecrets: the password reaches the pod only as a file from a Secret,
// never as a value in the ConfigMap or the environment.
func checkReplayStoreSecrets(tb testing.TB, o objects) {
	tb.Helper()
	for k := range o.configMap.Data {
		if k == "TOKENSVC_REPLAY_STORE_PASSWORD" {
			tb.Errorf("ConfigMap carries %s", k)
		}
	}
	for _, e := range o.deployment.Spec.Template.Spec.Containers[0].Env {
		if e.Name == "TOKENSVC_REPLAY_STORE_PASSWORD" && e.Value != "" {
			tb.Errorf("environment carries %s as a value", e.Name)
		}
	}
	if file, ok := o.configMap.Data["TOKENSVC_REPLAY_STORE_PASSWORD_FILE"]; ok {
		var v *corev1.Volume
		for i := range o.deployment.Spec.Template.Spec.Volumes {
			if vol := &o.deployment.Spec.Template.Spec.Volumes[i]; vol.Name == "replay-store" {
				v = vol
			}
		}
		if v == nil || v.Secret == nil || len(v.Secret.Items) != 1 || v.Secret.Items[0].Path != filepath.Base(file) {
			tb.Errorf("%s=%s: got volume %+v, want the Secret's key mounted as that file", "TOKENSVC_REPLAY_STORE_PASSWORD_FILE", file, v)
		}
	}
}

// TestReplayStoreSchema: the schema refuses a password in the URL and the settings that
// make no sense together.
func TestReplayStoreSchema(t *testing.T) {
	c := mustLoadChart(t)
	tests := []struct {
		name, values, wantErr string
	}{
		{"password in the URL", "replayStore: {url: 'redis://u:secret@redis:6379'}", "/replayStore/url"},
		{"not redis", "replayStore: {url: 'http://redis:6379'}", "/replayStore/url"},
		{"CA without TLS", "replayStore: {url: 'redis://redis', caCert: {existingConfigMap: ca}}", "/replayStore/caCert"},
		{"password without a URL", "replayStore: {password: {existingSecret: pw}}", "/replayStore/password"},
		{"shared device limits without a URL", "replayStore: {deviceLimits: true}", "/replayStore/deviceLimits"},
		{"CA from both", "replayStore: {url: 'rediss://redis', caCert: {existingSecret: a, existingConfigMap: b}}", "/replayStore/caCert"},
		{"password as an extra variable", "extraEnv: [{name: TOKENSVC_REPLAY_STORE_PASSWORD, value: hunter2}]", "/extraEnv/0"},
		{"unknown key", "replayStore: {address: 'redis://redis'}", "'address' not allowed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := render(c, mustParseValues(t, tt.values))
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("got %v, want an error naming %s", err, tt.wantErr)
			}
		})
	}
}
