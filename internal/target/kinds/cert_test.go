package kinds_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/tokensvc/tokensvc/internal/domain"
	"github.com/tokensvc/tokensvc/internal/target"
	"github.com/tokensvc/tokensvc/internal/target/kinds"
)

// TestCertificateMode holds every kind to the rules of mode certificate: the kinds that
// offer it take the shared certificate fields (defaults filled in) and refuse their
// token-only fields; other modes refuse the certificate fields; the Azure token kinds
// without an X.509 story refuse the mode.
func TestCertificateMode(t *testing.T) {
	set := kinds.All()
	cert := domain.SignCertificate
	tests := []struct {
		name     string
		kind     domain.HubKind
		host     string
		mode     domain.SigningMode
		settings map[string]string
		policy   string
		want     map[string]string // settings after Normalize, when it succeeds
		wantErr  string
	}{
		{name: "awsiot defaults", kind: "awsiot", mode: cert, want: map[string]string{
			"certificateTtlSeconds": "86400", "certificateMaxTtlSeconds": "86400",
			"certificateKeyTypes": `["ecdsa-p256","ecdsa-p384","rsa-2048","rsa-3072","rsa-4096"]`,
			"topicTemplate":       `"devices/{deviceId}/telemetry"`}},
		{name: "awsiot ttl above max", kind: "awsiot", mode: cert, settings: map[string]string{"certificateTtlSeconds": "7200", "certificateMaxTtlSeconds": "3600"}, wantErr: "above certificateMaxTtlSeconds"},
		{name: "awsiot max alone raises the default no further than 24 h", kind: "awsiot", mode: cert, settings: map[string]string{"certificateMaxTtlSeconds": "604800"}, want: map[string]string{
			"certificateTtlSeconds": "86400", "certificateMaxTtlSeconds": "604800",
			"certificateKeyTypes": `["ecdsa-p256","ecdsa-p384","rsa-2048","rsa-3072","rsa-4096"]`,
			"topicTemplate":       `"devices/{deviceId}/telemetry"`}},
		{name: "awsiot authorizer in mode certificate", kind: "awsiot", mode: cert, settings: map[string]string{"authorizerName": `"a"`}, wantErr: "authorizerName"},
		{name: "awsiot certificate field in mode customAuthorizer", kind: "awsiot", mode: domain.SignCustomAuthorizer, settings: map[string]string{"authorizerName": `"a"`, "tokenKeyName": `"t"`, "certificateTtlSeconds": "3600"}, wantErr: "only to mode certificate"},
		{name: "iothub key types", kind: "iothub", mode: cert, settings: map[string]string{"certificateKeyTypes": `["ecdsa-p256"]`, "pkiRole": `"tokensvc-hub1"`}, want: map[string]string{
			"certificateTtlSeconds": "86400", "certificateMaxTtlSeconds": "86400", "certificateKeyTypes": `["ecdsa-p256"]`, "pkiRole": `"tokensvc-hub1"`}},
		{name: "iothub unknown key type", kind: "iothub", mode: cert, settings: map[string]string{"certificateKeyTypes": `["rsa-1024"]`}, wantErr: `"rsa-1024" is not one of`},
		{name: "iothub key type twice", kind: "iothub", mode: cert, settings: map[string]string{"certificateKeyTypes": `["ecdsa-p256","ecdsa-p256"]`}, wantErr: "listed twice"},
		{name: "iothub ttl too short", kind: "iothub", mode: cert, settings: map[string]string{"certificateTtlSeconds": "60"}, wantErr: "must be 300 to"},
		{name: "iothub policy key in mode certificate", kind: "iothub", mode: cert, policy: "p", wantErr: "policyName and policyKey"},
		{name: "iothub certificate field in mode deviceKey", kind: "iothub", mode: domain.SignDeviceKey, settings: map[string]string{"certificateKeyTypes": `["ecdsa-p256"]`}, wantErr: "only to mode certificate"},
		{name: "iothub bad pki role", kind: "iothub", mode: cert, settings: map[string]string{"pkiRole": `"a/b"`}, wantErr: "pkiRole"},
		{name: "jwtbroker Event Grid", kind: "jwtbroker", host: "ns.westeurope-1.ts.eventgrid.azure.net", mode: cert, want: map[string]string{
			"certificateTtlSeconds": "86400", "certificateMaxTtlSeconds": "86400",
			"certificateKeyTypes": `["ecdsa-p256","ecdsa-p384","rsa-2048","rsa-3072","rsa-4096"]`,
			"port":                "8883", "mqttVersion": `"5"`, "clientIdTemplate": `"{deviceId}"`, "usernameTemplate": `"{deviceId}"`, "topicTemplate": `"devices/{deviceId}/telemetry"`}},
		{name: "jwtbroker JWT field in mode certificate", kind: "jwtbroker", mode: cert, settings: map[string]string{"audience": `"x"`}, wantErr: "apply to mode jwt"},
		{name: "jwtbroker certificate field in mode jwt", kind: "jwtbroker", mode: domain.SignJWT, settings: map[string]string{"certificateTtlSeconds": "3600"}, wantErr: "only to mode certificate"},
		{name: "eventhubs has no certificate mode", kind: "eventhubs", mode: cert, wantErr: "mode"},
		{name: "dps has no certificate mode", kind: "dps", mode: cert, wantErr: "mode"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k, err := set.Lookup(tt.kind)
			if err != nil {
				t.Fatal(err)
			}
			h := domain.Hub{Name: "h", Kind: tt.kind, Hostname: tt.host, Mode: tt.mode, Settings: tt.settings}
			if h.Hostname == "" {
				h.Hostname = "h.example.com"
			}
			if tt.policy != "" {
				h.PolicyName, h.PolicyKey = tt.policy, "AAAA"
			}
			err = k.Normalize(&h)
			if tt.wantErr != "" {
				if !errors.Is(err, domain.ErrInvalid) || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got %v, want an invalid error saying %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(h.Settings) != len(tt.want) {
				t.Errorf("settings: got %v, want %v", h.Settings, tt.want)
			}
			for name, want := range tt.want {
				if h.Settings[name] != want {
					t.Errorf("%s: got %s, want %s", name, h.Settings[name], want)
				}
			}
			if _, ok := k.(target.CertificateKind); !ok {
				t.Errorf("kind %s takes mode certificate but has no CertificateProfile", tt.kind)
			}
			cs, err := target.CertificateSettingsOf(h)
			if err != nil || cs.TTLSeconds == 0 {
				t.Errorf("CertificateSettingsOf: got %+v, %v; want the stored settings", cs, err)
			}
		})
	}
}
