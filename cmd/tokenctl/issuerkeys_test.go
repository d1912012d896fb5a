package main

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestTokenctlIssuerKeys(t *testing.T) {
	url := mustServer(t)
	if out := mustCtl(t, url, "issuer-keys", "list"); !strings.HasPrefix(out, "KID") || strings.Count(out, "\n") != 1 {
		t.Errorf("issuer-keys list on a fresh service: got %q, want only the header", out)
	}
	// The first key of an algorithm signs at once; the next one is pending.
	var first struct{ Kid, Alg, State string }
	if err := json.Unmarshal([]byte(mustCtl(t, url, "-o", "json", "issuer-keys", "rotate", "-alg", "ES256")), &first); err != nil || first.Alg != "ES256" || first.State != "active" || first.Kid == "" {
		t.Fatalf("issuer-keys rotate -o json: got %+v %v, want an active ES256 key", first, err)
	}
	out, errOut, err := ctl(t, url, adminToken, "issuer-keys", "rotate", "-alg", "ES256")
	if err != nil || !strings.Contains(out, "pending") || !strings.Contains(errOut, "signs from") {
		t.Errorf("issuer-keys rotate: got %v, stdout %q, stderr %q, want a pending key and the note", err, out, errOut)
	}
	var page struct {
		Items []struct{ Kid, State string }
	}
	if err := json.Unmarshal([]byte(mustCtl(t, url, "-o", "json", "issuer-keys", "list")), &page); err != nil || len(page.Items) != 2 {
		t.Fatalf("issuer-keys list -o json: got %+v %v, want 2 keys", page, err)
	}
	if page.Items[1].Kid != first.Kid || page.Items[0].State != "pending" {
		t.Errorf("issuer-keys list: got %+v, want the pending key first, then %s", page.Items, first.Kid)
	}
	if out := mustCtl(t, url, "issuer-keys", "list"); !strings.HasPrefix(out, "KID") || !strings.Contains(out, first.Kid) {
		t.Errorf("issuer-keys list (table): got %q", out)
	}

	tests := []struct {
		name    string
		args    []string
		wantErr string
	}{
		{"no alg", []string{"issuer-keys", "rotate"}, "-alg is required"},
		{"bad alg", []string{"issuer-keys", "rotate", "-alg", "HS256"}, "400"},
		{"stray argument", []string{"issuer-keys", "list", "x"}, "want 0 argument"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, _, err := ctl(t, url, adminToken, tt.args...); err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("got error %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}
