package awspeer_test

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/tokensvc/tokensvc/internal/agent/wsconn"
	"github.com/tokensvc/tokensvc/internal/awsauth/awspeer"
	"github.com/tokensvc/tokensvc/internal/oapi"
	"github.com/tokensvc/tokensvc/internal/testca"
)

// TestServiceTokenConnects provisions an awsiot hub and a device through tokensvc's
// operator API (the service as app.New builds it), fetches the device's token with
// GET /token as the agent does, and connects with nothing but the MQTT profile to the
// AWS stand-in, whose authorizer verifies the token against tokensvc's JWKS.
func TestServiceTokenConnects(t *testing.T) {
	f := awspeer.NewFixture(t, awspeer.FixtureOptions{SubscribeTemplates: []string{"commands/{deviceId}/#"}})
	tok := f.Token(t, "")
	r := tok.Response
	m := r.Mqtt
	if r.Kind != oapi.Awsiot || r.Resource != awspeer.Endpoint || r.Signature == nil || r.Amqp != nil ||
		m == nil || m.Port != 443 || m.Alpn == nil || !slices.Equal(*m.Alpn, []string{"mqtt"}) ||
		m.ClientId != f.DeviceID || m.ProtocolVersion != "3.1.1" || m.Tls == nil || m.Tls.ServerName != awspeer.Endpoint ||
		!strings.HasPrefix(m.Username, f.DeviceID+"?x-amz-customauthorizer-name="+awspeer.AuthorizerName+"&"+awspeer.TokenKeyName+"=") {
		t.Fatalf("token response: %+v\nmqtt %+v", r, m)
	}
	if h := r.Https; h == nil || h.Headers == nil || (*h.Headers)[awspeer.TokenKeyName] != r.Token ||
		(*h.Headers)["x-amz-customauthorizer-signature"] != *r.Signature {
		t.Fatalf("https profile: %+v", r.Https)
	}
	c, err := dial(t, f.Broker.Addr, testca.Pool(f.CA), m.Tls.ServerName, m.ClientId, m.Username, m.Password, *m.Alpn)
	if err != nil {
		t.Fatalf("CONNECT: %v (stand-in %+v)", err, f.Broker.Stats().Refused)
	}
	if err := c.publish(t, m.Topics.Publish); err != nil {
		t.Fatal(err)
	}
	if pubs := f.Broker.Published(); len(pubs) != 1 || pubs[0].Topic != "devices/"+f.DeviceID+"/telemetry" {
		t.Fatalf("published: %+v", pubs)
	}

	// Another device of the hub cannot use its token with this device's client ID.
	other := f.Service.CreateDevice(oapi.DeviceCreate{DeviceId: "sensor-0002", Hub: f.Hub, Auth: oapi.CredentialCreate{Type: oapi.Hs256}})
	f2 := *f
	f2.DeviceID, f2.SecretFile = "sensor-0002", t.TempDir()+"/secret"
	writeSecret(t, f2.SecretFile, *other.Auth.Secret)
	o := f2.Token(t, "").Response.Mqtt
	if _, err := dial(t, f.Broker.Addr, testca.Pool(f.CA), o.Tls.ServerName, f.DeviceID, o.Username, o.Password, *o.Alpn); err == nil {
		t.Fatal("sensor-0002's token connected as sensor-0001")
	}
	if n := f.Broker.Stats().Refused[awspeer.RefusedLambda]; n != 1 {
		t.Fatalf("refused by the authorizer: got %d, want 1", n)
	}
}

func TestServiceTokenUnsigned(t *testing.T) {
	f := awspeer.NewFixture(t, awspeer.FixtureOptions{Unsigned: true})
	r := f.Token(t, "").Response
	m := r.Mqtt
	if r.Signature != nil || m.Password != r.Token || strings.Contains(m.Username, r.Token) {
		t.Fatalf("unsigned profile: signature %v, mqtt %+v", r.Signature, m)
	}
	c, err := dial(t, f.Broker.Addr, testca.Pool(f.CA), m.Tls.ServerName, m.ClientId, m.Username, m.Password, *m.Alpn)
	if err != nil {
		t.Fatalf("CONNECT: %v (%+v)", err, f.Broker.Stats().Refused)
	}
	if err := c.publish(t, m.Topics.Publish); err != nil {
		t.Fatal(err)
	}
}

func writeSecret(t *testing.T, path, secret string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestWebSocketUpgradeChecked: over WebSocket the values travel in the upgrade URL; a
// tampered token is turned away there, before any MQTT.
func TestWebSocketUpgradeChecked(t *testing.T) {
	f := awspeer.NewFixture(t, awspeer.FixtureOptions{})
	m := f.Token(t, "ws").Response.Mqtt
	if m.Transport != "ws" || !strings.HasPrefix(m.Url, "wss://"+awspeer.Endpoint+"/mqtt?x-amz-customauthorizer-name=") || m.Alpn != nil {
		t.Fatalf("ws profile: %+v", m)
	}
	conf := &tls.Config{RootCAs: testca.Pool(f.CA), ServerName: awspeer.Endpoint}
	tampered := strings.Replace(m.Url, awspeer.TokenKeyName+"=ey", awspeer.TokenKeyName+"=ez", 1)
	if c, err := wsconn.Dial(context.Background(), tampered, "mqtt", conf, f.Broker.WSAddr); err == nil {
		c.Close()
		t.Fatal("a tampered token got through the upgrade")
	}
	if n := f.Broker.Stats().Refused[awspeer.RefusedSignature]; n != 1 {
		t.Fatalf("signature refusals: got %d, want 1", n)
	}
	c, err := wsconn.Dial(context.Background(), m.Url, "mqtt", conf, f.Broker.WSAddr)
	if err != nil {
		t.Fatalf("the profile's URL: %v", err)
	}
	c.Close()
}

// TestPlainTextForm: the compact form a microcontroller reads carries the ALPN, the
// signature and, where the password is not the token, the password (empty with
// signing, so a device does not send the token twice).
func TestPlainTextForm(t *testing.T) {
	for _, unsigned := range []bool{false, true} {
		f := awspeer.NewFixture(t, awspeer.FixtureOptions{Unsigned: unsigned})
		now := time.Now()
		assertion, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
			"iss": f.DeviceID, "sub": f.DeviceID, "aud": awspeer.Audience, "iat": now.Unix(),
			"exp": now.Add(time.Minute).Unix(), "jti": rand.Text()}).SignedString([]byte(f.Secret))
		if err != nil {
			t.Fatal(err)
		}
		resp, err := f.Service.Client("").GetTokenWithResponse(context.Background(), nil, func(_ context.Context, r *http.Request) error {
			r.Header.Set("Authorization", "Bearer "+assertion)
			r.Header.Set("Accept", "text/plain")
			return nil
		})
		if err != nil || resp.StatusCode() != http.StatusOK {
			t.Fatalf("GET /token: %v %d %s", err, resp.StatusCode(), resp.Body)
		}
		fields := map[string]string{}
		for l := range strings.SplitSeq(strings.TrimSpace(string(resp.Body)), "\n") {
			k, v, _ := strings.Cut(l, "=")
			fields[k] = v
		}
		pw, hasPW := fields["mqttPassword"]
		if fields["mqttAlpn"] != "mqtt" || fields["mqttPort"] != "443" || fields["mqttClientId"] != f.DeviceID {
			t.Errorf("unsigned=%v: %v", unsigned, fields)
		}
		if !unsigned && (fields["signature"] == "" || !hasPW || pw != "" || !strings.Contains(fields["mqttUsername"], fields["token"])) {
			t.Errorf("signing: signature %q, password %q (%v), user name %q", fields["signature"], pw, hasPW, fields["mqttUsername"])
		}
		if unsigned && (fields["signature"] != "" || hasPW) {
			t.Errorf("without signing the password is the token and goes unsaid: %v", fields)
		}
	}
}

// TestHTTPSPublish posts with nothing but the https profile (URL and headers): the
// stand-in checks the signature, asks the authorizer, and its policy allows the
// device's own topic only.
func TestHTTPSPublish(t *testing.T) {
	f := awspeer.NewFixture(t, awspeer.FixtureOptions{})
	h := f.Token(t, "").Response.Https
	if h == nil || h.Headers == nil || h.Alpn != nil {
		t.Fatalf("https profile: %+v", h)
	}
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: testca.Pool(f.CA)},
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, f.Broker.WSAddr)
		},
	}}
	post := func(url string, headers map[string]string) int {
		req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(`{"temp":21.5}`))
		if err != nil {
			t.Fatal(err)
		}
		for k, v := range headers {
			req.Header.Set(k, v)
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := post(h.Url, *h.Headers); code != http.StatusOK {
		t.Fatalf("POST %s: %d (stand-in %+v)", h.Url, code, f.Broker.Stats().Refused)
	}
	if pubs := f.Broker.Published(); len(pubs) != 1 || pubs[0].Topic != "devices/"+f.DeviceID+"/telemetry" || string(pubs[0].Payload) != `{"temp":21.5}` {
		t.Fatalf("published: %+v", pubs)
	}
	if ev := f.Broker.Stats().Events[0]; !slices.Equal(ev.Protocols, []string{"tls", "http"}) || ev.ProtocolData.HTTP == nil || ev.ProtocolData.MQTT != nil {
		t.Fatalf("event: %+v", ev)
	}
	other := strings.Replace(h.Url, "/devices/"+f.DeviceID+"/", "/devices/sensor-0002/", 1)
	if code := post(other, *h.Headers); code != http.StatusForbidden {
		t.Fatalf("POST to another device's topic: got %d, want 403", code)
	}
	noSig := map[string]string{}
	for k, v := range *h.Headers {
		if k != "x-amz-customauthorizer-signature" {
			noSig[k] = v
		}
	}
	if code := post(h.Url, noSig); code != http.StatusUnauthorized {
		t.Fatalf("POST without the signature: got %d, want 401", code)
	}
}
