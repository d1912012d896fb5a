// Command tokenbench is tokensvc's load tool, for a service running on this machine
// (loopback only, every run time-bounded). Subcommands:
//
//	tokenbench load [flags]        GET /token keep-alive HS256 beside a bare net/http baseline (package load)
//	tokenbench storm [flags]       the TLS boot storm of ES256 devices (package storm)
//	tokenbench vault [flags]       the Vault store (KV cache, Transit) beside raw transit/hmac (package vault)
//	tokenbench import [flags]      devices per second of one streaming bulk import (package bulk)
//	tokenbench baseline [flags]    the bare baseline handler alone, in this process; prints its URL
//	tokenbench selfsigned -cert F -key F   a throwaway loopback TLS certificate and key
//	tokenbench freeport            a free TCP port on 127.0.0.1, for scripts
//	tokenbench version             the build this binary came from
//
// `tokenbench <subcommand> -h` lists a subcommand's flags. The scripts/bench-*.sh
// scripts start the service and run these; see BENCHMARKS.md.
package main

import (
	"context"
	"fmt"
	"io"

	"github.com/tokensvc/tokensvc/internal/cliflags"
	"github.com/tokensvc/tokensvc/internal/version"
	"github.com/tokensvc/tokensvc/tools/tokenbench/bench"
	"github.com/tokensvc/tokensvc/tools/tokenbench/bulk"
	"github.com/tokensvc/tokensvc/tools/tokenbench/load"
	"github.com/tokensvc/tokensvc/tools/tokenbench/storm"
	"github.com/tokensvc/tokensvc/tools/tokenbench/vault"
)

func main() {
	cliflags.MainArgs("tokenbench", run)
}

// errUsage is a wrong command line, after the usage has been printed.
var errUsage = cliflags.ErrUsage

const usage = `usage: tokenbench <subcommand> [flags]

  load        GET /token keep-alive HS256 beside a bare net/http baseline
  storm       the TLS boot storm: each ES256 device one GET /token on a new connection
  vault       the Vault store (KV cache, Transit) beside Vault's own transit/hmac
  import      devices per second of one streaming POST /devices/import
  baseline    serve the bare baseline handler alone; prints its URL
  selfsigned  write a throwaway loopback TLS certificate and key (-cert F -key F)
  freeport    print a free TCP port on 127.0.0.1
  version     print the build this binary came from

tokenbench <subcommand> -h lists its flags; see BENCHMARKS.md.
`

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errUsage
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "load":
		return load.Run(ctx, rest, getenv, stdout, stderr)
	case "storm":
		return storm.Run(ctx, rest, getenv, stdout, stderr)
	case "vault":
		return vault.Run(ctx, rest, getenv, stdout, stderr)
	case "import":
		return bulk.Run(ctx, rest, getenv, stdout, stderr)
	case "baseline":
		return bench.ServeBaseline(ctx, rest, stdout, stderr)
	case "selfsigned":
		return bench.SelfSigned(rest, stderr)
	case "freeport":
		return bench.FreePort(stdout)
	case "version", "-version", "--version":
		_, err := fmt.Fprintln(stdout, version.String("tokenbench"))
		return err
	case "help", "-h", "-help", "--help":
		_, err := fmt.Fprint(stdout, usage)
		return err
	default:
		fmt.Fprintf(stderr, "tokenbench: unknown subcommand %q\n%s", cmd, usage)
		return errUsage
	}
}
