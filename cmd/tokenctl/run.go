package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/tokensvc/tokensvc/internal/cliflags"
	"github.com/tokensvc/tokensvc/internal/oapi"
	"github.com/tokensvc/tokensvc/internal/version"
)

// errUsage means the usage text was printed already.
var errUsage = cliflags.ErrUsage

const usage = `tokenctl — operate tokensvc

Usage:
  tokenctl [-o table|json] <command> [flags] [args]
  tokenctl -version

Devices:
  devices add ID -hub NAME [-auth hs256|es256|eddsa|x509|x509-ca] [-public-key-file PEM] [-cert-file PEM]
                 [-primary-key-file F] [-secondary-key-file F] [-module ID]... [-disabled] [-max-ttl SECONDS]
                 [-gateway | -parent GATEWAY]
  devices list [-limit N] [-parent GATEWAY]
  devices get ID
  devices rotate ID [-module ID]
  devices revoke ID
  devices import FILE|-  [-format ndjson|csv]   (the NDJSON report goes to stdout: it holds the new secrets)

Hubs:
  hubs add NAME -kind iothub|eventhubs|dps -hostname HOST [-mode M] [-policy-name N]
               [-policy-key-file F] [-entity-path P] [-id-scope S] [-gateway HOST] [-transit]
  hubs list
  hubs get NAME
  hubs ca NAME          (mode certificate: the PEM CA chain to register with the cloud)

Issuer keys (sign JWT credentials; public halves at /.well-known/jwks.json):
  issuer-keys list
  issuer-keys rotate -alg RS256|ES256   (published now, signs after the publication lead)

Store (embedded):
  store backup FILE     (a consistent copy while the service runs; sealed with its master key)

Environment: TOKENSVC_URL (default http://localhost:8080), TOKENSVC_ADMIN_TOKEN (required).
Keys are read from files, never from flags, so they do not show in the process list.
`

// cli is one invocation.
type cli struct {
	api    *oapi.ClientWithResponses
	http   *oapi.Client
	json   bool
	stdout io.Writer
	stderr io.Writer
}

// run is the whole program; main only wires signals and the process environment to it.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	global := flag.NewFlagSet("tokenctl", flag.ContinueOnError)
	global.SetOutput(stderr)
	global.Usage = func() { fmt.Fprint(stderr, usage) }
	output := global.String("o", "table", "output: table or json")
	showVersion := global.Bool("version", false, "print the version and exit")
	if err := global.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return errUsage
	}
	if *showVersion {
		_, err := fmt.Fprintln(stdout, version.String("tokenctl"))
		return err
	}
	if *output != "table" && *output != "json" {
		return fmt.Errorf("-o %q: want table or json", *output)
	}
	rest := global.Args()
	if len(rest) < 2 {
		fmt.Fprint(stderr, usage)
		return errUsage
	}
	token := getenv("TOKENSVC_ADMIN_TOKEN")
	if token == "" {
		return errors.New("TOKENSVC_ADMIN_TOKEN is not set")
	}
	server := getenv("TOKENSVC_URL")
	if server == "" {
		server = "http://localhost:8080"
	}
	auth := oapi.WithRequestEditorFn(func(_ context.Context, r *http.Request) error {
		r.Header.Set("Authorization", "Bearer "+token)
		return nil
	})
	hc := &http.Client{Timeout: 30 * time.Second}
	api, err := oapi.NewClientWithResponses(server, auth, oapi.WithHTTPClient(hc))
	if err != nil {
		return fmt.Errorf("TOKENSVC_URL: %w", err)
	}
	// Imports stream for as long as they take: no overall timeout.
	raw, err := oapi.NewClient(server, auth)
	if err != nil {
		return fmt.Errorf("TOKENSVC_URL: %w", err)
	}
	c := &cli{api: api, http: raw, json: *output == "json", stdout: stdout, stderr: stderr}

	commands := map[string]func(context.Context, []string) error{
		"devices add":        c.deviceAdd,
		"devices list":       c.deviceList,
		"devices get":        c.deviceGet,
		"devices rotate":     c.deviceRotate,
		"devices revoke":     c.deviceRevoke,
		"devices import":     c.deviceImport,
		"hubs add":           c.hubAdd,
		"hubs list":          c.hubList,
		"hubs get":           c.hubGet,
		"hubs ca":            c.hubCA,
		"issuer-keys list":   c.issuerKeyList,
		"issuer-keys rotate": c.issuerKeyRotate,
		"store backup":       c.storeBackup,
	}
	name := rest[0] + " " + rest[1]
	if command, ok := commands[name]; ok {
		return command(ctx, rest[2:])
	}
	fmt.Fprint(stderr, usage)
	return fmt.Errorf("unknown command %q", name)
}

// parse parses flags and positional arguments in any order and wants exactly nPos
// positional arguments.
func (c *cli) parse(fs *flag.FlagSet, args []string, nPos int) ([]string, error) {
	fs.SetOutput(c.stderr)
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, errUsage
		}
		if fs.NArg() == 0 {
			break
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
	if len(pos) != nPos {
		return nil, fmt.Errorf("%s: want %d argument(s), got %d", fs.Name(), nPos, len(pos))
	}
	return pos, nil
}

// positional parses the arguments of a command that takes no flags of its own, name
// ("hubs get"), and wants nPos positional arguments.
func (c *cli) positional(name string, args []string, nPos int) ([]string, error) {
	return c.parse(flag.NewFlagSet(name, flag.ContinueOnError), args, nPos)
}
