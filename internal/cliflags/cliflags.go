// Package cliflags is the one configuration mechanism of every binary: typed flags bound
// to a configuration struct, each also read from an environment variable whose name is
// derived from the flag's (prefix + upper case, '-' → '_'), a few declared exceptions
// (VAULT_ADDR), secrets read from the environment only, and layers that give flags
// precedence over the environment (and the environment over, say, a file).
//
// A flag's default is whatever its bound variable holds when it is registered, so a
// binary fills its configuration with defaults first and registers flags on it.
package cliflags

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strings"
)

// ErrVersion is returned by Parse when a flag registered with Version was given; the
// caller prints its version and exits successfully.
var ErrVersion = errors.New("version requested")

// Set is a flag set whose options also come from the environment. Register every option
// before calling Parse.
type Set struct {
	fs      *flag.FlagSet
	prefix  string
	rename  map[string]string // flag name → environment name, for the declared exceptions
	noEnv   map[string]bool   // command flags (-version): flags only, never configuration
	secrets []secret
	version *bool
	// layer counts the sources applied so far; a list set in a newer layer replaces
	// what older layers set.
	layer int
}

type secret struct {
	p          *string
	env, usage string
}

// Option is one documented configuration option: a flag with its environment variable,
// or (Flag empty) a secret read from the environment only.
type Option struct {
	Flag    string
	Env     string
	Default string
	Usage   string
}

// New returns an empty Set named name (for usage messages) whose environment variables
// start with envPrefix; usage and parse errors are written to out.
func New(name, envPrefix string, out io.Writer) *Set {
	s := &Set{fs: flag.NewFlagSet(name, flag.ContinueOnError), prefix: envPrefix, rename: map[string]string{}, noEnv: map[string]bool{}}
	s.fs.SetOutput(out)
	s.fs.Usage = s.usage
	return s
}

// RenameEnv declares that flag name reads the environment variable env instead of the
// derived name, for variables with a standard name of their own (VAULT_ADDR). Call it
// before registering the flag, so its usage names the right variable.
func (s *Set) RenameEnv(name, env string) { s.rename[name] = env }

// EnvName is the environment variable of flag name.
func (s *Set) EnvName(name string) string {
	if env, ok := s.rename[name]; ok {
		return env
	}
	return s.prefix + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

// Secret declares an option read only from the environment variable env, never from a
// flag (flags show in ps): its value is stored in *p by Parse.
func (s *Set) Secret(p *string, env, usage string) {
	s.secrets = append(s.secrets, secret{p: p, env: env, usage: usage})
}

// Version registers -version, a command-line-only flag: Parse returns ErrVersion when
// it is given.
func (s *Set) Version() {
	s.version = new(bool)
	s.Command(s.version, "version", "print the version and exit")
}

// Command registers a boolean flag that is not configuration: no environment variable,
// no file line, not in Options.
func (s *Set) Command(p *bool, name, usage string) {
	s.noEnv[name] = true
	s.fs.BoolVar(p, name, *p, usage)
}

// IsOption reports whether name is a configuration option (not a command flag).
func (s *Set) IsOption(name string) bool { return s.fs.Lookup(name) != nil && !s.noEnv[name] }

// Layer starts a new source of values: lists it sets replace those set before.
func (s *Set) Layer() { s.layer++ }

// SetOption sets option name from text, as a line of a configuration file would, in the
// current layer.
func (s *Set) SetOption(name, text string) error {
	if !s.IsOption(name) {
		return fmt.Errorf("unknown option %q", name)
	}
	return s.fs.Set(name, text)
}

// Parse reads the environment (variables that are unset or empty leave the option as it
// is), then the flags in args, each in a layer of its own so flags win, then the
// secrets. A bad environment value is an error naming the variable; arguments after the
// flags are an error. With -version given it returns ErrVersion.
func (s *Set) Parse(args []string, getenv func(string) string) error {
	s.Layer()
	var errs []error
	s.fs.VisitAll(func(f *flag.Flag) {
		if s.noEnv[f.Name] {
			return
		}
		env := s.EnvName(f.Name)
		v := getenv(env)
		if v == "" {
			return
		}
		vals := []string{v}
		if _, ok := f.Value.(*listValue); ok {
			vals = strings.Split(strings.TrimSpace(v), "\n")
		}
		for _, v := range vals {
			if err := s.fs.Set(f.Name, strings.TrimSpace(v)); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", env, err))
			}
		}
	})
	s.Layer()
	if err := s.fs.Parse(args); err != nil {
		return err
	}
	if s.version != nil && *s.version {
		return ErrVersion
	}
	if s.fs.NArg() > 0 {
		errs = append(errs, fmt.Errorf("unexpected arguments: %s", strings.Join(s.fs.Args(), " ")))
	}
	for _, sec := range s.secrets {
		*sec.p = getenv(sec.env)
	}
	return errors.Join(errs...)
}

// Options lists the configuration options in name order, then the secrets, for
// documentation and the tests that hold documentation to the code.
func (s *Set) Options() []Option {
	var out []Option
	s.fs.VisitAll(func(f *flag.Flag) {
		if !s.noEnv[f.Name] {
			out = append(out, Option{Flag: f.Name, Env: s.EnvName(f.Name), Default: f.DefValue, Usage: f.Usage})
		}
	})
	for _, sec := range s.secrets {
		out = append(out, Option{Env: sec.env, Usage: sec.usage})
	}
	return out
}

// Lookup returns the flag name, or nil.
func (s *Set) Lookup(name string) *flag.Flag { return s.fs.Lookup(name) }

func (s *Set) usage() {
	out := s.fs.Output()
	fmt.Fprintf(out, "Usage of %s (every flag NAME also reads %s<NAME>, upper case, '-' as '_'; flags win):\n", s.fs.Name(), s.prefix)
	s.fs.PrintDefaults()
	if len(s.secrets) > 0 {
		fmt.Fprintln(out, "Environment only:")
		for _, sec := range slices.Clone(s.secrets) {
			fmt.Fprintf(out, "  %s\n    \t%s\n", sec.env, sec.usage)
		}
	}
}

// register adds v as flag name, its usage followed by its environment variable.
func (s *Set) register(v flag.Value, name, usage string) {
	s.fs.Var(v, name, usage+" ("+s.EnvName(name)+")")
}
