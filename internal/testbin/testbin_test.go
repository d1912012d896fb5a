package testbin_test

import (
	"os/exec"
	"testing"

	"github.com/tokensvc/tokensvc/internal/testbin"
)

func TestFind(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Fatalf("no sh on PATH: %v", err)
	}
	t.Run("the variable wins", func(t *testing.T) {
		t.Setenv("TESTBIN_PROGRAM", "/opt/x/program")
		if got := testbin.Find(t, "TESTBIN_PROGRAM", "sh", "unused"); got != "/opt/x/program" {
			t.Errorf("Find = %q, want the variable's /opt/x/program", got)
		}
	})
	t.Run("then PATH", func(t *testing.T) {
		t.Setenv("TESTBIN_PROGRAM", "")
		if got := testbin.Find(t, "TESTBIN_PROGRAM", "sh", "unused"); got != sh {
			t.Errorf("Find = %q, want %q from PATH", got, sh)
		}
	})
}
