package charttest

import (
	"slices"
	"strings"
	"testing"
)

// policyLines returns the non-blank, non-comment lines of an HCL policy, trimmed.
func policyLines(src string) []string {
	var out []string
	for line := range strings.SplitSeq(src, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		out = append(out, line)
	}
	return out
}

// notesPolicy extracts the policy the notes print between <<'EOF' and EOF.
func notesPolicy(tb testing.TB, notes string) string {
	tb.Helper()
	_, rest, ok := strings.Cut(notes, "<<'EOF'\n")
	if !ok {
		tb.Fatalf("notes: got no Vault policy heredoc in:\n%s", notes)
	}
	policy, _, ok := strings.Cut(rest, "\n  EOF")
	if !ok {
		tb.Fatal("notes: Vault policy heredoc is not closed")
	}
	return policy
}

// TestVaultPolicyMatchesRepo checks that the policy the chart's notes print for the
// default mounts and prefix is exactly deploy/vault/tokensvc.hcl, the least-privilege
// policy the Vault integration tests run the service with; with Transit off, the same
// policy without the Transit paths.
func TestVaultPolicyMatchesRepo(t *testing.T) {
	repo := policyLines(string(mustReadFile(t, "../../deploy/vault/tokensvc.hcl")))
	// noTransit drops every Transit path; issuerOnly keeps the issuer keys' paths
	// ("-i-"), which an issuer URL needs without Transit hubs.
	var noTransit, issuerOnly []string
	for i := 0; i < len(repo); i++ {
		if strings.HasPrefix(repo[i], `path "transit/`) {
			issuer := strings.Contains(repo[i], "-i-*")
			for repo[i] != "}" {
				if issuer {
					issuerOnly = append(issuerOnly, repo[i])
				}
				i++
			}
			if issuer {
				issuerOnly = append(issuerOnly, repo[i])
			}
			continue
		}
		noTransit = append(noTransit, repo[i])
		issuerOnly = append(issuerOnly, repo[i])
	}
	if len(noTransit) == len(repo) {
		t.Fatal("deploy/vault/tokensvc.hcl: found no Transit paths, want some")
	}
	c := mustLoadChart(t)
	tests := []struct {
		name   string
		values string
		want   []string
	}{
		{"transit on", "vault: {transit: {enabled: true}}", repo},
		{"transit off", "", noTransit},
		{"transit off, issuer URL set", "config: {issuer: {url: https://tokens.example.com}}", issuerOnly},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, _, err := render(c, mustParseValues(t, tt.values))
			if err != nil {
				t.Fatal(err)
			}
			if strings.Contains(tt.values, "issuer") && !strings.Contains(out["tokensvc/templates/configmap.yaml"], `TOKENSVC_ISSUER_URL: "https://tokens.example.com"`) {
				t.Errorf("configmap: no TOKENSVC_ISSUER_URL for config.issuer.url:\n%s", out["tokensvc/templates/configmap.yaml"])
			}
			got := policyLines(notesPolicy(t, out["tokensvc/templates/NOTES.txt"]))
			if !slices.Equal(got, tt.want) {
				t.Errorf("policy in the notes:\n%s\nwant (deploy/vault/tokensvc.hcl):\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
		})
	}
}
