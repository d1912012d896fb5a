package strictjson_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/tokensvc/tokensvc/internal/strictjson"
)

func TestCheck(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		wantErr bool
	}{
		{"object", `{"a":1,"b":{"c":[1,2,{"d":null}]}}`, false},
		{"same key in different objects", `{"a":{"k":1},"b":{"k":2}}`, false},
		{"duplicate key", `{"a":1,"a":2}`, true},
		{"nested duplicate key", `{"a":[{"k":1,"k":1}]}`, true},
		{"two values", `{} {}`, true},
		{"not JSON", `{`, true},
		{"too deep", strings.Repeat("[", strictjson.MaxDepth+2) + strings.Repeat("]", strictjson.MaxDepth+2), true},
		{"deep but allowed", strings.Repeat("[", strictjson.MaxDepth) + strings.Repeat("]", strictjson.MaxDepth), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := strictjson.Check([]byte(tt.in)); (err != nil) != tt.wantErr {
				t.Fatalf("got %v, want error %v", err, tt.wantErr)
			}
		})
	}
}

// FuzzCheck: Check never panics, accepts only what encoding/json accepts, and accepts
// every document encoding/json writes (which never repeats a key) within MaxDepth.
func FuzzCheck(f *testing.F) {
	for _, s := range []string{`{"a":1}`, `{"a":1,"a":2}`, `[[[{}]]]`, `"x"`, `{"a":{"b":[1,{"a":2}]}}`, `{} []`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if strictjson.Check(b) == nil && !json.Valid(b) {
			t.Fatalf("accepted %q, which encoding/json rejects", b)
		}
		var v any
		if json.Unmarshal(b, &v) != nil {
			return
		}
		again, err := json.Marshal(v)
		if err != nil {
			return
		}
		if err := strictjson.Check(again); err != nil && !strings.Contains(err.Error(), "deeper") {
			t.Fatalf("rejected %q, written by encoding/json: %v", again, err)
		}
	})
}
