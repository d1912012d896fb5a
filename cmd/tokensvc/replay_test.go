package main

import (
	"testing"

	"github.com/tokensvc/tokensvc/internal/apptest"
)

// TestReplayRefusedAfterRestart: an assertion used before a clean restart stays used
// after it, on the embedded store.
func TestReplayRefusedAfterRestart(t *testing.T) {
	env := map[string]string{"TOKENSVC_DATA_DIR": t.TempDir(), "TOKENSVC_AUDIENCE": "tokensvc", "TOKENSVC_ADMIN_TOKEN": "replay-test-admin-token-0123"}
	in := mustStart(t, env)
	ctx := t.Context()
	c := client(t, in.url, env["TOKENSVC_ADMIN_TOKEN"])
	apptest.PostHub(t, c, mainHub)
	secret := *apptest.PostDevice(t, c, hs256("d1", "main")).Auth.Secret
	used := assertionFor(t, "d1", secret, "jti-before-restart")
	getTokenWith(t, in.url, used)
	in.stop(t)

	in2 := mustStart(t, env)
	resp, err := client(t, in2.url, used).GetTokenWithResponse(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode() != 401 {
		t.Errorf("replay after restart: got %d, want 401", resp.StatusCode())
	}
	getToken(t, in2.url, "d1", secret, "jti-after-restart")
}
