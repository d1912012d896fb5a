package domain_test

import (
	"testing"

	"github.com/tokensvc/tokensvc/internal/domain"
)

// TestCloneSharesNothing: what a clone's holder changes in its slices and maps does not
// reach the original (a store hands out clones of the records it keeps).
func TestCloneSharesNothing(t *testing.T) {
	d := domain.Device{ID: "d1", Modules: []domain.Module{{ID: "m1"}}, Auth: domain.Credential{Type: domain.CredHS256, Secret: []byte("s3cr3t")}}
	c := d.Clone()
	c.Modules[0].ID = "changed"
	c.Auth.Secret[0] = 'X'
	if d.Modules[0].ID != "m1" || string(d.Auth.Secret) != "s3cr3t" {
		t.Errorf("device: got modules %v and a changed secret %t, want the original's untouched", d.Modules, string(d.Auth.Secret) != "s3cr3t")
	}
	h := domain.Hub{Name: "h", Settings: map[string]string{"k": "v"}}
	hc := h.Clone()
	hc.Settings["k"] = "changed"
	if h.Settings["k"] != "v" {
		t.Errorf("hub settings: got %v, want k=v", h.Settings)
	}
}
