package cliflags_test

import (
	"errors"
	"io"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tokensvc/tokensvc/internal/cliflags"
)

type conf struct {
	Addr   string
	Rate   float64
	Burst  int
	Wait   time.Duration
	On     bool
	Cache  bool
	Level  slog.Level
	Algs   []string
	Props  []string
	Vault  string
	Secret string
}

func newSet(c *conf) *cliflags.Set {
	s := cliflags.New("test", "TEST_", io.Discard)
	s.RenameEnv("vault-addr", "VAULT_ADDR")
	s.String(&c.Addr, "addr", "listen address")
	s.Float(&c.Rate, "rate", "rate")
	s.Int(&c.Burst, "burst", "burst")
	s.Duration(&c.Wait, "wait", "wait")
	s.Bool(&c.On, "on", "on")
	s.Switch(&c.Cache, "cache", "cache")
	s.Level(&c.Level, "log-level", "level")
	s.CSV(&c.Algs, "algs", "algorithms")
	s.List(&c.Props, "prop", "repeatable")
	s.String(&c.Vault, "vault-addr", "vault")
	s.Secret(&c.Secret, "TEST_SECRET", "a secret")
	s.Version()
	return s
}

func TestParse(t *testing.T) {
	env := map[string]string{
		"TEST_ADDR": ":1", "TEST_RATE": "0.5", "TEST_BURST": "3", "TEST_WAIT": "2s", "TEST_ON": "true",
		"TEST_CACHE": "off", "TEST_LOG_LEVEL": "debug", "TEST_ALGS": "RS256, ES256", "TEST_PROP": "a=1\nb=2",
		"VAULT_ADDR": "http://v", "TEST_SECRET": "s3cret",
	}
	c := conf{Addr: ":8080", Cache: true, Algs: []string{"x"}}
	s := newSet(&c)
	if err := s.Parse([]string{"-addr", ":2", "-prop", "c=3"}, func(k string) string { return env[k] }); err != nil {
		t.Fatal(err)
	}
	want := conf{Addr: ":2", Rate: 0.5, Burst: 3, Wait: 2 * time.Second, On: true, Level: slog.LevelDebug,
		Algs: []string{"RS256", "ES256"}, Props: []string{"c=3"}, Vault: "http://v", Secret: "s3cret"}
	if !slices.Equal(c.Algs, want.Algs) || !slices.Equal(c.Props, want.Props) {
		t.Errorf("lists: got %q %q, want %q %q", c.Algs, c.Props, want.Algs, want.Props)
	}
	c.Algs, c.Props, want.Algs, want.Props = nil, nil, nil, nil
	if c.Addr != want.Addr || c.Rate != want.Rate || c.Burst != want.Burst || c.Wait != want.Wait || c.On != want.On ||
		c.Cache != want.Cache || c.Level != want.Level || c.Vault != want.Vault || c.Secret != want.Secret {
		t.Errorf("got %+v, want %+v", c, want)
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		wantErr string
	}{
		{"bad env names the variable", nil, map[string]string{"TEST_BURST": "many"}, `TEST_BURST: burst "many": not a whole number`},
		{"bad renamed env", nil, map[string]string{"TEST_WAIT": "soon"}, "TEST_WAIT: wait"},
		{"bad switch", []string{"-cache", "maybe"}, nil, "want on or off"},
		{"bad level", []string{"-log-level", "loud"}, nil, "log level"},
		{"stray argument", []string{"serve"}, nil, "unexpected arguments: serve"},
		{"version", []string{"-version"}, map[string]string{"TEST_BURST": "many"}, cliflags.ErrVersion.Error()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var c conf
			err := newSet(&c).Parse(tt.args, func(k string) string { return tt.env[k] })
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("got %v, want an error containing %q", err, tt.wantErr)
			}
		})
	}
	var c conf
	if err := newSet(&c).Parse([]string{"-version"}, func(string) string { return "" }); !errors.Is(err, cliflags.ErrVersion) {
		t.Errorf("got %v, want ErrVersion", err)
	}
}

func TestOptions(t *testing.T) {
	c := conf{Addr: ":8080", Wait: time.Minute, Cache: true, Algs: []string{"RS256", "ES256"}}
	s := newSet(&c)
	got := map[string]cliflags.Option{}
	for _, o := range s.Options() {
		got[o.Env] = o
	}
	for _, want := range []cliflags.Option{
		{Flag: "addr", Env: "TEST_ADDR", Default: ":8080"},
		{Flag: "wait", Env: "TEST_WAIT", Default: "1m0s"},
		{Flag: "cache", Env: "TEST_CACHE", Default: "on"},
		{Flag: "algs", Env: "TEST_ALGS", Default: "RS256,ES256"},
		{Flag: "vault-addr", Env: "VAULT_ADDR", Default: ""},
		{Flag: "log-level", Env: "TEST_LOG_LEVEL", Default: "info"},
		{Env: "TEST_SECRET"},
	} {
		o, ok := got[want.Env]
		if !ok || o.Flag != want.Flag || o.Default != want.Default {
			t.Errorf("%s: got %+v, want %+v", want.Env, o, want)
		}
	}
	if _, ok := got["TEST_VERSION"]; ok {
		t.Error("-version is listed as an option")
	}
}

func TestCheckDoc(t *testing.T) {
	const md = "# x\n\n## Configuration\n\n| flag | environment | default | meaning |\n| --- | --- | --- | --- |\n" +
		"| `-addr` | `TEST_ADDR` | `:8080` | listen |\n" +
		"| `-wait`, `-rate` | `TEST_WAIT`, `TEST_RATE` | `1m`, `0` (off) | two |\n" +
		"| `-vault-addr` | `TEST_VAULT_ADDR` | — | wrong name |\n" +
		"| `-burst` | `TEST_BURST` | `7` | wrong default |\n" +
		"| — | `TEST_SECRET` | — | secret |\n" +
		"| — | `TEST_NOPE` | — | not a secret |\n\nafter\n"
	rows, err := cliflags.DocTable(md, "## Configuration")
	if err != nil {
		t.Fatal(err)
	}
	fresh := func() *cliflags.Set {
		c := conf{Addr: ":8080", Wait: time.Minute}
		return newSet(&c)
	}
	var got []string
	for _, err := range cliflags.CheckDoc(rows, fresh) {
		got = append(got, err.Error())
	}
	want := []string{
		`line 9: -vault-addr: environment variable is VAULT_ADDR, documented TEST_VAULT_ADDR`,
		`line 10: -burst: default is "0", documented "7"`,
		`line 12: TEST_NOPE is documented as environment-only but is not a declared secret`,
		"option cache (TEST_CACHE) is not documented",
	}
	for _, w := range want {
		if !slices.Contains(got, w) {
			t.Errorf("missing %q in:\n%s", w, strings.Join(got, "\n"))
		}
	}
	for _, g := range got {
		if strings.HasPrefix(g, "line 7:") || strings.HasPrefix(g, "line 8:") || strings.HasPrefix(g, "line 11:") {
			t.Errorf("unexpected disagreement: %s", g)
		}
	}
}

func TestIsLoopback(t *testing.T) {
	tests := []struct {
		host string
		want bool
	}{
		{"localhost", true},
		{"127.0.0.1", true},
		{"127.8.9.10", true},
		{"::1", true},
		{"0.0.0.0", false},
		{"10.0.0.1", false},
		{"tokensvc.example", false},
		{"localhost.example", false},
		{"", false},
	}
	for _, tt := range tests {
		if got := cliflags.IsLoopback(tt.host); got != tt.want {
			t.Errorf("IsLoopback(%q): got %v, want %v", tt.host, got, tt.want)
		}
	}
}
