package signer_test

import (
	"errors"
	"net/url"
	"testing"
	"time"

	"github.com/tokensvc/tokensvc/internal/sasvectors"
	"github.com/tokensvc/tokensvc/internal/signer"
)

// resourceFor rebuilds each vector's resource from its parts with the package's own
// builders, so a wrong builder fails the vector as surely as a wrong signature.
func resourceFor(t *testing.T, v sasvectors.Vector) string {
	switch v.Kind {
	case "iothub-device", "iothub-policy":
		return signer.IoTHubDeviceResource(v.Host, v.DeviceID)
	case "iothub-module":
		return signer.IoTHubModuleResource(v.Host, v.DeviceID, v.ModuleID)
	case "eventhubs":
		return v.Resource // the vector's entity URL is the resource itself
	case "dps":
		return signer.DPSRegistrationResource(v.IDScope, v.RegistrationID)
	}
	t.Fatalf("unknown vector kind %q", v.Kind)
	return ""
}

func TestVectors(t *testing.T) {
	for _, v := range sasvectors.Load(t) {
		t.Run(v.Kind+"/"+v.Resource, func(t *testing.T) {
			res := resourceFor(t, v)
			if res != v.Resource {
				t.Fatalf("resource: got %q, want %q", res, v.Resource)
			}
			enc := signer.KeyBase64
			if v.KeyEncoding == "utf8" {
				enc = signer.KeyUTF8
			}
			keyStr := v.Key
			if v.Kind == "dps" {
				derived, err := signer.DeriveDeviceKey(v.GroupKey, v.RegistrationID)
				if err != nil {
					t.Fatal(err)
				}
				if derived != v.DerivedKey {
					t.Fatalf("derived key: got %q, want %q", derived, v.DerivedKey)
				}
				keyStr = derived
			}
			key, err := signer.DecodeKey(keyStr, enc)
			if err != nil {
				t.Fatal(err)
			}
			policy := v.Policy()
			s := signer.New(func() time.Time { return time.Unix(v.Expiry-3600, 0) })
			tok := s.Sign(signer.Request{Resource: res, Key: key, PolicyName: policy, TTL: time.Hour})
			if tok.Value != v.Token {
				t.Fatalf("token:\n got %s\nwant %s", tok.Value, v.Token)
			}
			if got := tok.ExpiresAt.Unix(); got != v.Expiry {
				t.Errorf("expiresAt: got %d, want %d", got, v.Expiry)
			}
			p, err := signer.Verify(tok.Value, key, time.Unix(v.Expiry-1, 0))
			if err != nil {
				t.Fatalf("verify: %v", err)
			}
			if p.Signature != v.Signature || p.Resource != v.Resource || p.PolicyName != policy {
				t.Errorf("parsed: got %+v, want sig %q resource %q skn %q", p, v.Signature, v.Resource, policy)
			}
			// The split path used for signing outside the process (Vault Transit) must
			// produce the same bytes.
			if got := signer.Assemble(res, v.Signature, v.Expiry, policy); got != v.Token {
				t.Errorf("assemble: got %s, want %s", got, v.Token)
			}
		})
	}
}

func TestEscapeMatchesQueryEscapeForIDCharacters(t *testing.T) {
	const idChars = "ABCXYZabcxyz0189-.%_*?!(),:=@$'"
	for _, c := range idChars {
		s := string(c)
		if got, want := signer.Escape(s), url.QueryEscape(s); got != want {
			t.Errorf("Escape(%q): got %q, want %q", s, got, want)
		}
	}
	if got, want := signer.Escape("a b~"), "a%20b~"; got != want {
		t.Errorf("Escape: got %q, want %q", got, want)
	}
}

func TestVerifyRejects(t *testing.T) {
	key := []byte("0123456789abcdef0123456789abcdef")
	tok := signer.SignAt("hub.azure-devices.net/devices/d1", key, 2000, "")
	tests := []struct {
		name    string
		token   string
		key     []byte
		now     int64
		wantErr error
	}{
		{"valid", tok, key, 1999, nil},
		{"expired at se", tok, key, 2000, signer.ErrExpired},
		{"wrong key", tok, []byte("other"), 1000, signer.ErrBadSignature},
		{"tampered resource", replace(tok, "d1", "d2"), key, 1000, signer.ErrBadSignature},
		{"extended expiry", replace(tok, "se=2000", "se=9000"), key, 1000, signer.ErrBadSignature},
		{"resource encoded differently", replace(tok, "%2F", "/"), key, 1000, signer.ErrBadSignature},
		{"no prefix", tok[len("SharedAccessSignature "):], key, 1000, signer.ErrMalformed},
		{"missing sig", "SharedAccessSignature sr=a&se=1", key, 0, signer.ErrMalformed},
		{"duplicate sr", tok + "&sr=x", key, 0, signer.ErrMalformed},
		{"unknown field", tok + "&foo=1", key, 0, signer.ErrMalformed},
		{"bad escape", "SharedAccessSignature sr=%zz&sig=a&se=1", key, 0, signer.ErrMalformed},
		{"negative se", "SharedAccessSignature sr=a&sig=a&se=-1", key, 0, signer.ErrMalformed},
		{"se with a plus sign", replace(tok, "se=2000", "se=+2000"), key, 1000, signer.ErrMalformed},
		{"se with a leading zero", replace(tok, "se=2000", "se=02000"), key, 1000, signer.ErrMalformed},
		{"duplicate skn", "SharedAccessSignature sr=a&sig=a&se=1&skn=&skn=x", key, 0, signer.ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := signer.Verify(tt.token, tt.key, time.Unix(tt.now, 0))
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("got %v, want %v", err, tt.wantErr)
			}
		})
	}
}

func replace(s, old, new string) string {
	for i := 0; i+len(old) <= len(s); i++ {
		if s[i:i+len(old)] == old {
			return s[:i] + new + s[i+len(old):]
		}
	}
	panic("replace: " + old + " not in " + s)
}

func TestDecodeKey(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		enc     signer.KeyEncoding
		want    string
		wantErr bool
	}{
		{"base64", "aGVsbG8=", signer.KeyBase64, "hello", false},
		{"utf8 kept verbatim", "aGVsbG8=", signer.KeyUTF8, "aGVsbG8=", false},
		{"bad base64", "not base64!", signer.KeyBase64, "", true},
		{"empty", "", signer.KeyBase64, "", true},
		{"empty utf8", "", signer.KeyUTF8, "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := signer.DecodeKey(tt.in, tt.enc)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err: got %v, wantErr %v", err, tt.wantErr)
			}
			if string(got) != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func FuzzSignParseVerify(f *testing.F) {
	f.Add("contoso.azure-devices.net/devices/Dev.With:Colons@site=7$x", []byte("k"), int64(1767226600), "")
	f.Add("https://ns.servicebus.windows.net/e", []byte("key"), int64(0), "Send&Listen=%")
	f.Fuzz(func(t *testing.T, resource string, key []byte, se int64, policy string) {
		if se < 0 || resource == "" {
			return
		}
		tok := signer.SignAt(resource, key, se, policy)
		p, err := signer.Verify(tok, key, time.Unix(se-1, 0))
		if err != nil {
			t.Fatalf("verify own token %q: %v", tok, err)
		}
		if p.Resource != resource || p.Expiry != se || p.PolicyName != policy {
			t.Fatalf("round trip: got %+v, want resource %q se %d skn %q", p, resource, se, policy)
		}
	})
}

func FuzzParse(f *testing.F) {
	f.Add("SharedAccessSignature sr=a%2Fb&sig=abc%3D&se=10&skn=x")
	f.Add("SharedAccessSignature sr=%&sig=&se=")
	f.Fuzz(func(t *testing.T, s string) {
		p, err := signer.Parse(s)
		if err != nil {
			return
		}
		// Whatever parses must re-assemble into a token that parses to the same fields.
		again, err := signer.Parse(signer.Assemble(p.Resource, p.Signature, p.Expiry, p.PolicyName))
		if err != nil {
			t.Fatalf("reparse: %v", err)
		}
		if again.Resource != p.Resource || again.Signature != p.Signature || again.Expiry != p.Expiry || again.PolicyName != p.PolicyName {
			t.Fatalf("got %+v, want %+v", again, p)
		}
	})
}

func BenchmarkSignIoTHubDevice(b *testing.B) {
	key, _ := signer.DecodeKey("IpHYzcMQQR5+wnN4pmHJNRh8B+TVY26bw8QAsnJEuM0=", signer.KeyBase64)
	s := signer.New(func() time.Time { return time.Unix(1767222000, 0) })
	r := signer.Request{Resource: signer.IoTHubDeviceResource("contoso-hub.azure-devices.net", "sensor-0001"), Key: key, TTL: time.Hour}
	b.ReportAllocs()
	for b.Loop() {
		_ = s.Sign(r)
	}
}

func BenchmarkSignEventHubs(b *testing.B) {
	s := signer.New(func() time.Time { return time.Unix(1767222000, 0) })
	r := signer.Request{
		Resource:   signer.EventHubsPublisherResource("contoso-ns.servicebus.windows.net", "telemetry", "sensor-0001"),
		Key:        []byte("xTOK69yMO2eDWPPYk1p16ESojJv1ugFiyNvS9OLwvYM="),
		PolicyName: "SendOnly",
		TTL:        time.Hour,
	}
	b.ReportAllocs()
	for b.Loop() {
		_ = s.Sign(r)
	}
}
