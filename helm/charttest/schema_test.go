package charttest

import (
	"strings"
	"testing"
)

// TestSchemaRejectsBadValues feeds values.schema.json the mistakes operators make and
// checks each is refused before anything renders, with a message naming the field.
func TestSchemaRejectsBadValues(t *testing.T) {
	tests := []struct {
		name   string
		values string
		// wantErr are substrings of the error: the field's path and what is wrong.
		wantErr []string
	}{
		{
			name:    "unknown top-level key",
			values:  "replicas: 3",
			wantErr: []string{"additional properties 'replicas' not allowed"},
		},
		{
			name:    "misspelt nested key",
			values:  "vault:\n  adress: https://vault:8200",
			wantErr: []string{"at '/vault'", "'adress' not allowed"},
		},
		{
			name:    "replicas as a string",
			values:  `replicaCount: "3"`,
			wantErr: []string{"at '/replicaCount'", "got string, want integer"},
		},
		{
			name:    "negative replicas",
			values:  "replicaCount: -1",
			wantErr: []string{"at '/replicaCount'", "minimum"},
		},
		{
			name:    "fractional replicas",
			values:  "replicaCount: 2.5",
			wantErr: []string{"at '/replicaCount'", "want integer"},
		},
		{
			name:    "unknown store",
			values:  "store: postgres",
			wantErr: []string{"at '/store'", "'vault'", "'embedded'"},
		},
		{
			name:    "unknown vault auth method",
			values:  "vault:\n  auth:\n    method: ldap",
			wantErr: []string{"at '/vault/auth/method'", "'kubernetes'"},
		},
		{
			name:    "vault address empty with the vault store",
			values:  `vault: {address: ""}`,
			wantErr: []string{"at '/vault/address'", "minLength"},
		},
		{
			name:    "vault address removed with the vault store",
			values:  "vault: {address: null}",
			wantErr: []string{"at '/vault'", "missing property 'address'"},
		},
		{
			name:    "vault address without scheme",
			values:  "vault: {address: vault.vault.svc:8200}",
			wantErr: []string{"at '/vault/address'", "does not match pattern"},
		},
		{
			name:    "PKI role the printed policy does not allow",
			values:  "vault: {pki: {role: devices}}",
			wantErr: []string{"at '/vault/pki/role'", "does not match pattern"},
		},
		{
			name:    "plain admin token value",
			values:  "adminToken: {value: tsa_s3cr3t-s3cr3t-s3cr3t}",
			wantErr: []string{"at '/adminToken'", "'value' not allowed"},
		},
		{
			name:    "admin token secret removed",
			values:  `adminToken: {existingSecret: ""}`,
			wantErr: []string{"at '/adminToken/existingSecret'", "does not match pattern"},
		},
		{
			name:    "plain vault token",
			values:  "vault:\n  auth:\n    method: token\n    token: {value: hvs.s3cr3t}",
			wantErr: []string{"at '/vault/auth/token'", "'value' not allowed"},
		},
		{
			name:    "approle without its Secret",
			values:  "vault:\n  auth:\n    method: approle",
			wantErr: []string{"at '/vault/auth/approle/existingSecret'", "minLength"},
		},
		{
			name:    "token auth without its Secret",
			values:  "vault:\n  auth:\n    method: token",
			wantErr: []string{"at '/vault/auth/token/existingSecret'", "minLength"},
		},
		{
			name:    "kubernetes auth without a role",
			values:  `vault: {auth: {kubernetes: {role: ""}}}`,
			wantErr: []string{"at '/vault/auth/kubernetes/role'", "minLength"},
		},
		{
			name:    "vault CA from both a Secret and a ConfigMap",
			values:  "vault: {caCert: {existingSecret: a, existingConfigMap: b}}",
			wantErr: []string{"at '/vault/caCert'", "not"},
		},
		{
			name:    "secret in extraEnv as plain value",
			values:  "extraEnv: [{name: VAULT_TOKEN, value: hvs.s3cr3t}]",
			wantErr: []string{"at '/extraEnv/0'", "valueFrom"},
		},
		{
			name:    "secret in extraEnv from a ConfigMap",
			values:  "extraEnv: [{name: TOKENSVC_ADMIN_TOKEN, valueFrom: {configMapKeyRef: {name: x, key: y}}}]",
			wantErr: []string{"at '/extraEnv/0/valueFrom'", "secretKeyRef"},
		},
		{
			name:    "embedded store with two replicas",
			values:  "store: embedded\nembedded: {masterKey: {existingSecret: mk}}",
			wantErr: []string{"at '/replicaCount'", "value must be 1"},
		},
		{
			name:    "embedded store with autoscaling",
			values:  "store: embedded\nreplicaCount: 1\nembedded: {masterKey: {existingSecret: mk}}\nautoscaling: {enabled: true}",
			wantErr: []string{"at '/autoscaling/enabled'", "value must be false"},
		},
		{
			name:    "embedded store without a master key Secret",
			values:  "store: embedded\nreplicaCount: 1",
			wantErr: []string{"at '/embedded/masterKey/existingSecret'", "minLength"},
		},
		{
			name:    "TLS without its Secret",
			values:  "tls: {enabled: true}",
			wantErr: []string{"at '/tls/existingSecret'", "minLength"},
		},
		{
			name:    "bad log level",
			values:  "config: {logLevel: verbose}",
			wantErr: []string{"at '/config/logLevel'", "'debug'"},
		},
		{
			name:    "drain time as a duration string",
			values:  `config: {shutdownTimeoutSeconds: "20s"}`,
			wantErr: []string{"at '/config/shutdownTimeoutSeconds'", "want integer"},
		},
		{
			name:    "root user",
			values:  "securityContext: {runAsUser: 0}",
			wantErr: []string{"at '/securityContext/runAsUser'", "minimum"},
		},
		{
			name:    "security context field the chart fixes",
			values:  "securityContext: {privileged: true}",
			wantErr: []string{"at '/securityContext'", "'privileged' not allowed"},
		},
		{
			name:    "bad memory quantity",
			values:  "resources: {limits: {memory: 256MB}}",
			wantErr: []string{"at '/resources/limits/memory'"},
		},
		{
			name:    "resources without a memory limit",
			values:  "resources: {limits: {memory: null}}",
			wantErr: []string{"at '/resources/limits'", "missing property 'memory'"},
		},
		{
			name:    "port out of range",
			values:  "service: {port: 70000}",
			wantErr: []string{"at '/service/port'", "maximum"},
		},
		{
			name:    "bad readiness path",
			values:  "probes: {readiness: {path: /ready}}",
			wantErr: []string{"at '/probes/readiness/path'", "'/readyz'"},
		},
		{
			name:    "bad image pull policy",
			values:  "image: {pullPolicy: Sometimes}",
			wantErr: []string{"at '/image/pullPolicy'"},
		},
		{
			name:    "image digest without algorithm",
			values:  "image: {digest: 4f3b1e0c}",
			wantErr: []string{"at '/image/digest'", "does not match pattern"},
		},
		{
			name:    "bad vault prefix",
			values:  "vault: {prefix: ../escape}",
			wantErr: []string{"at '/vault/prefix'", "does not match pattern"},
		},
		{
			name:    "service account not created and not named",
			values:  "serviceAccount: {create: false}",
			wantErr: []string{"at '/serviceAccount/name'", "minLength"},
		},
		{
			name:    "NetworkPolicy peer with an unknown field",
			values:  "networkPolicy: {enabled: true, vaultTo: [{namespace: vault}]}",
			wantErr: []string{"at '/networkPolicy/vaultTo/0'", "'namespace' not allowed"},
		},
	}
	c := mustLoadChart(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := renderValues(c, mustParseValues(t, tt.values))
			if err == nil {
				t.Fatalf("values %q: got no error, want one naming %q", tt.values, tt.wantErr)
			}
			msg := err.Error()
			if !strings.Contains(msg, "values don't meet the specifications of the schema") {
				t.Errorf("got error %q, want a schema error", msg)
			}
			for _, want := range tt.wantErr {
				if !strings.Contains(msg, want) {
					t.Errorf("values %q: got error:\n%s\nwant it to contain %q", tt.values, msg, want)
				}
			}
		})
	}
}

// TestTemplateRejectsBadCombinations covers the rules JSON Schema cannot express; the
// chart enforces them with fail, which aborts helm install with the message.
func TestTemplateRejectsBadCombinations(t *testing.T) {
	tests := []struct {
		name    string
		values  string
		wantErr string
	}{
		{
			name:    "grace period equal to drain plus preStop",
			values:  "terminationGracePeriodSeconds: 25",
			wantErr: "terminationGracePeriodSeconds (25) must exceed lifecycle.preStopSleepSeconds + config.shutdownTimeoutSeconds (5 + 20 = 25)",
		},
		{
			name:    "drain longer than the grace period",
			values:  "config: {shutdownTimeoutSeconds: 60}",
			wantErr: "terminationGracePeriodSeconds (35) must exceed",
		},
		{
			name:    "autoscaler minimum above maximum",
			values:  "autoscaling: {enabled: true, minReplicas: 5, maxReplicas: 3}",
			wantErr: "autoscaling.minReplicas (5) must not exceed autoscaling.maxReplicas (3)",
		},
	}
	c := mustLoadChart(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := render(c, mustParseValues(t, tt.values))
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("values %q: got error %v, want one containing %q", tt.values, err, tt.wantErr)
			}
		})
	}
}

// agentInjectorValues is the README's Vault Agent Injector example.
const agentInjectorValues = `
vault:
  address: http://127.0.0.1:8200
  auth:
    method: token
    token:
      existingSecret: tokensvc-agent-placeholder
podAnnotations:
  vault.hashicorp.com/agent-inject: "true"
  vault.hashicorp.com/role: tokensvc
  vault.hashicorp.com/agent-cache-enable: "true"
  vault.hashicorp.com/agent-cache-use-auto-auth-token: force
`

// TestSchemaAcceptsGoodValues makes sure the schema is not so strict that
// common, valid overrides fail.
func TestSchemaAcceptsGoodValues(t *testing.T) {
	tests := []struct {
		name   string
		values string
	}{
		{"no overrides", ""},
		{"percent disruption budget", "podDisruptionBudget: {maxUnavailable: 50%}"},
		{"numeric cpu", "resources: {requests: {cpu: 0.5}}"},
		{"extra resources", "resources: {limits: {ephemeral-storage: 100Mi}}"},
		{"secret env from a Secret", "extraEnv: [{name: TOKENSVC_VAULT_SECRET_ID, valueFrom: {secretKeyRef: {name: s, key: k}}}]"},
		{"plain non-secret env", "extraEnv: [{name: GOMEMLIMIT, value: 200MiB}]"},
		{"helm global values", "global: {imageRegistry: r.example.com}"},
		{"existing service account", "serviceAccount: {create: false, name: tokensvc-vault}"},
		{"embedded store", "store: embedded\nreplicaCount: 1\nembedded: {masterKey: {existingSecret: mk}}"},
		// The Vault Agent Injector alternative, exactly as helm/README.md shows it.
		{"vault agent injector", agentInjectorValues},
	}
	c := mustLoadChart(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, _, err := render(c, mustParseValues(t, tt.values)); err != nil {
				t.Errorf("values %q: got %v, want no error", tt.values, err)
			}
		})
	}
}
