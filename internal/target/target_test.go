package target_test

import (
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/tokensvc/tokensvc/internal/domain"
	"github.com/tokensvc/tokensvc/internal/target"
	"github.com/tokensvc/tokensvc/internal/target/iothub"
	"github.com/tokensvc/tokensvc/internal/target/kinds"
)

func TestSetLookup(t *testing.T) {
	s := kinds.All()
	tests := []struct {
		name    string
		kind    domain.HubKind
		wantErr error
	}{
		{"iothub", domain.KindIoTHub, nil},
		{"eventhubs", domain.KindEventHubs, nil},
		{"dps", domain.KindDPS, nil},
		{"awsiot", "awsiot", nil},
		{"jwtbroker", "jwtbroker", nil},
		{"unknown", "mqtt", domain.ErrInvalid},
		{"case matters", "IoTHub", domain.ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k, err := s.Lookup(tt.kind)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("got error %v, want %v", err, tt.wantErr)
			}
			if err == nil && k.Name() != tt.kind {
				t.Fatalf("got kind %q, want %q", k.Name(), tt.kind)
			}
		})
	}
	if got, want := s.Names(), []domain.HubKind{"awsiot", "dps", "eventhubs", "iothub", "jwtbroker"}; !slices.Equal(got, want) {
		t.Fatalf("got names %v, want %v", got, want)
	}
}

func TestSetRefusesTwoKindsWithOneName(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("got no panic for a kind registered twice")
		}
	}()
	target.NewSet(iothub.Kind{}, iothub.Kind{})
}

func TestCheckSettings(t *testing.T) {
	tests := []struct {
		name     string
		settings map[string]string
		allowed  []string
		wantErr  error
	}{
		{"none given, none taken", nil, nil, nil},
		{"one given, none taken", map[string]string{"x": "1"}, nil, domain.ErrInvalid},
		{"allowed", map[string]string{"x": "1"}, []string{"x", "y"}, nil},
		{"not allowed", map[string]string{"z": "1"}, []string{"x", "y"}, domain.ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := domain.Hub{Kind: "k", Settings: tt.settings}
			if err := target.CheckSettings(h, tt.allowed...); !errors.Is(err, tt.wantErr) {
				t.Fatalf("got %v, want %v", err, tt.wantErr)
			}
		})
	}
}

func TestDecodeSettings(t *testing.T) {
	type kindSettings struct {
		Name  string   `json:"name"`
		Port  int      `json:"port"`
		On    *bool    `json:"on"`
		Items []string `json:"items"`
	}
	tests := []struct {
		name      string
		settings  map[string]string
		want      kindSettings
		wantField string // the field a refusal must name; "" for success
	}{
		{"none", nil, kindSettings{}, ""},
		{"all fields", map[string]string{"name": `"a \"b\""`, "port": "8883", "on": "false", "items": `["x","y"]`},
			kindSettings{Name: `a "b"`, Port: 8883, On: new(bool), Items: []string{"x", "y"}}, ""},
		{"a field the kind does not take", map[string]string{"name": `"a"`, "colour": `"red"`}, kindSettings{}, "colour"},
		{"a value of the wrong type", map[string]string{"name": `"a"`, "port": `"8883"`}, kindSettings{}, "port"},
		{"text that is not JSON", map[string]string{"items": `[1,`}, kindSettings{}, "items"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got kindSettings
			err := target.DecodeSettings(domain.Hub{Kind: "k", Settings: tt.settings}, &got)
			if tt.wantField != "" {
				if !errors.Is(err, domain.ErrInvalid) || !strings.Contains(err.Error(), tt.wantField) {
					t.Fatalf("got %v, want an invalid-field error naming %q", err, tt.wantField)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestMode(t *testing.T) {
	for _, tc := range []struct {
		name    string
		mode    domain.SigningMode
		modes   []domain.SigningMode
		want    domain.SigningMode
		wantErr string
	}{
		{"empty takes the default", "", []domain.SigningMode{domain.SignDeviceKey, domain.SignPolicy}, domain.SignDeviceKey, ""},
		{"listed mode kept", domain.SignPolicy, []domain.SigningMode{domain.SignDeviceKey, domain.SignPolicy}, domain.SignPolicy, ""},
		{"one mode", domain.SignGroupKey, []domain.SigningMode{domain.SignPolicy},
			domain.SignGroupKey, "mode: a dps hub signs with mode policy, not groupKey"},
		{"three modes", domain.SignJWT, []domain.SigningMode{domain.SignDeviceKey, domain.SignPolicy, domain.SignCertificate},
			domain.SignJWT, "mode: a dps hub signs with mode deviceKey, policy or certificate, not jwt"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := domain.Hub{Kind: domain.KindDPS, Mode: tc.mode}
			err := target.Mode(&h, tc.modes...)
			if h.Mode != tc.want {
				t.Errorf("mode = %q, want %q", h.Mode, tc.want)
			}
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("unexpected error %v", err)
			case tc.wantErr != "" && (err == nil || err.Error() != "invalid: "+tc.wantErr || !errors.Is(err, domain.ErrInvalid)):
				t.Fatalf("error = %v, want %q wrapping domain.ErrInvalid", err, tc.wantErr)
			}
		})
	}
}
