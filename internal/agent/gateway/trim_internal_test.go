package gateway

import (
	"runtime"
	"strings"
	"testing"
	"unsafe"

	"github.com/tokensvc/tokensvc/internal/agent/token"
	"github.com/tokensvc/tokensvc/internal/oapi"
)

// TestTrimKeepsOnlyTheUpstreamsProfile: a leaf's kept token holds the upstream's
// profile only, and two leaves' tokens share one copy of the CA certificate.
func TestTrimKeepsOnlyTheUpstreamsProfile(t *testing.T) {
	leafToken := func(id string) token.Token {
		ca := strings.Repeat("C", 1500) // a fresh copy per token, as decoded from JSON
		cs := "HostName=h;DeviceId=" + id + ";SharedAccessSignature=sig"
		tls := func() *oapi.TlsSettings {
			c := strings.Clone(ca)
			return &oapi.TlsSettings{ServerName: "h", CaCert: &c}
		}
		return token.Token{Response: oapi.TokenResponse{Token: "sig-" + id, ConnectionString: &cs, Https: &oapi.HttpsProfile{},
			Amqp: &oapi.AmqpProfile{Host: "h", Address: "/devices/" + id + "/messages/events", Tls: tls()},
			Mqtt: &oapi.MqttProfile{Host: "h", ClientId: id, Tls: tls()}}}
	}
	for _, tc := range []struct {
		upstream string
		tls      func(token.Token) *oapi.TlsSettings
	}{
		{AMQP, func(t token.Token) *oapi.TlsSettings { return t.Response.Amqp.Tls }},
		{MQTT, func(t token.Token) *oapi.TlsSettings { return t.Response.Mqtt.Tls }},
	} {
		t.Run(tc.upstream, func(t *testing.T) {
			trim := trimFor(tc.upstream)
			a, b := trim(leafToken("leaf-a")), trim(leafToken("leaf-b"))
			r := a.Response
			if r.ConnectionString != nil || r.Https != nil || (r.Amqp == nil) != (tc.upstream != AMQP) || (r.Mqtt == nil) != (tc.upstream != MQTT) {
				t.Fatalf("kept: connectionString %v, https %v, amqp %v, mqtt %v; want only %s", r.ConnectionString != nil,
					r.Https != nil, r.Amqp != nil, r.Mqtt != nil, tc.upstream)
			}
			if r.Token != "sig-leaf-a" {
				t.Errorf("token: got %q, want sig-leaf-a", r.Token)
			}
			ca, cb := tc.tls(a).CaCert, tc.tls(b).CaCert
			if *ca != *cb || unsafe.StringData(*ca) != unsafe.StringData(*cb) {
				t.Error("two leaves' CA certificates: want one shared copy")
			}
		})
	}
}

// TestReadRuntimeStats: the figures the stats line logs are read (non-zero where a
// running program must have some).
func TestReadRuntimeStats(t *testing.T) {
	runtime.GC()
	r := ReadRuntimeStats()
	if r.Goroutines < 1 || r.HeapLiveKiB <= 0 || r.StacksKiB <= 0 || r.TotalKiB < r.HeapLiveKiB || r.GCs < 1 {
		t.Errorf("runtime stats: got %+v, want goroutines, live heap, stacks, total >= heap and a GC", r)
	}
	if r.GCCPUPercent < 0 || r.GCCPUPercent > 100 {
		t.Errorf("GC CPU share: got %v %%, want 0..100", r.GCCPUPercent)
	}
}
