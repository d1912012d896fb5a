package intake

import (
	"errors"
	"testing"

	"github.com/tokensvc/tokensvc/internal/agent/telemetry"
)

func TestParseLine(t *testing.T) {
	leaves := Leaves{"lora-1": "", "lora-2": "pw"}
	tests := []struct {
		name     string
		line     string
		format   telemetry.Format
		wantLeaf string
		wantBody string
		wantProp string
		wantErr  error
	}{
		{name: "raw", line: "lora-1 t=21.5 rh=40\r\n", format: telemetry.Raw, wantLeaf: "lora-1", wantBody: "t=21.5 rh=40"},
		{name: "json", line: `lora-1 {"body":"x","properties":{"k":"v"}}`, format: telemetry.JSON, wantLeaf: "lora-1", wantBody: "x", wantProp: "v"},
		{name: "unknown leaf", line: "lora-9 hello", format: telemetry.Raw, wantErr: ErrUnknownLeaf},
		// lora-2 has a local MQTT password; a line, which anyone can send, must not
		// speak for it.
		{name: "leaf with a local password", line: "lora-2 forged", format: telemetry.Raw, wantErr: ErrProtected},
		{name: "no payload", line: "lora-1", format: telemetry.Raw, wantErr: ErrMalformed},
		{name: "empty payload", line: "lora-1 ", format: telemetry.Raw, wantErr: ErrMalformed},
		{name: "leading space", line: " lora-1 x", format: telemetry.Raw, wantErr: ErrMalformed},
		{name: "bad json", line: "lora-1 {", format: telemetry.JSON, wantErr: ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			leaf, m, err := ParseLine([]byte(tt.line), leaves, tt.format)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err: got %v, want %v", err, tt.wantErr)
			}
			if err != nil {
				return
			}
			if leaf != tt.wantLeaf || string(m.Body) != tt.wantBody || m.Properties["k"] != tt.wantProp {
				t.Errorf("got %q %q %v, want %q %q k=%q", leaf, m.Body, m.Properties, tt.wantLeaf, tt.wantBody, tt.wantProp)
			}
		})
	}
}

func FuzzParseLine(f *testing.F) {
	leaves := Leaves{"a": "", "lora-1": ""}
	f.Add([]byte("lora-1 hello"), false)
	f.Add([]byte(`a {"body":1}`), true)
	f.Fuzz(func(t *testing.T, b []byte, js bool) {
		format := telemetry.Raw
		if js {
			format = telemetry.JSON
		}
		leaf, _, err := ParseLine(b, leaves, format)
		if err == nil && !leaves.Known(leaf) {
			t.Fatalf("accepted unknown leaf %q", leaf)
		}
	})
}
