package jwtpeer

import "testing"

func TestCovers(t *testing.T) {
	tests := []struct {
		rule, topic string
		want        bool
	}{
		{"devices/d1/telemetry", "devices/d1/telemetry", true},
		{"devices/d1/telemetry", "devices/d1/telemetry/x", false},
		{"devices/d1/#", "devices/d1", true},
		{"devices/d1/#", "devices/d1/a/b", true},
		{"devices/d1/#", "devices/d2/a", false},
		{"devices/+/telemetry", "devices/d1/telemetry", true},
		{"devices/+/telemetry", "devices/+/telemetry", true},
		{"devices/d1/+", "devices/d1/#", false},
		{"devices/d1/+", "devices/d1/+", true},
		{"devices/d1/cmd", "devices/d1/+", false},
		{"#", "anything/at/all", true},
	}
	for _, tt := range tests {
		if got := covers(tt.rule, tt.topic); got != tt.want {
			t.Errorf("covers(%q, %q): got %v, want %v", tt.rule, tt.topic, got, tt.want)
		}
	}
}

func TestParseACL(t *testing.T) {
	a, err := parseACL(map[string]any{"pub": []any{"a/#"}, "all": []any{"b"}})
	if err != nil {
		t.Fatal(err)
	}
	if !a.Allows("a/x", true) || a.Allows("a/x", false) || !a.Allows("b", false) {
		t.Errorf("got %+v, want pub a/# and all b", a)
	}
	for _, bad := range []any{"a/#", map[string]any{"pub": "a"}, map[string]any{"write": []any{"a"}}, map[string]any{"pub": []any{1}}} {
		if _, err := parseACL(bad); err == nil {
			t.Errorf("parseACL(%v): got nil error, want one", bad)
		}
	}
}
