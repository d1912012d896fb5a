package cliflags

import (
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"time"
)

// value is a typed flag value: parse turns text into T, format turns T back into the
// text a user would write. Errors name the option in words ("vault timeout").
type value[T any] struct {
	p      *T
	label  string
	parse  func(string) (T, error)
	format func(T) string
	isBool bool
}

func (v *value[T]) String() string {
	if v == nil || v.p == nil {
		return ""
	}
	return v.format(*v.p)
}

func (v *value[T]) Set(s string) error {
	x, err := v.parse(s)
	if err != nil {
		return fmt.Errorf("%s %q: %w", v.label, s, err)
	}
	*v.p = x
	return nil
}

// IsBoolFlag lets a boolean flag stand alone (-pprof for -pprof=true).
func (v *value[T]) IsBoolFlag() bool { return v.isBool }

func label(name string) string { return strings.ReplaceAll(name, "-", " ") }

// Func registers flag name on s for a type of the caller's: parse reads the text of a
// flag or environment variable, format writes the value back (for the default shown).
func Func[T any](s *Set, p *T, name, usage string, parse func(string) (T, error), format func(T) string) {
	s.register(&value[T]{p: p, label: label(name), parse: parse, format: format}, name, usage)
}

// String registers a string option.
func (s *Set) String(p *string, name, usage string) {
	Func(s, p, name, usage, func(t string) (string, error) { return t, nil }, func(v string) string { return v })
}

// Int registers a whole-number option.
func (s *Set) Int(p *int, name, usage string) {
	Func(s, p, name, usage, func(t string) (int, error) {
		n, err := strconv.Atoi(t)
		if err != nil {
			return 0, fmt.Errorf("not a whole number")
		}
		return n, nil
	}, strconv.Itoa)
}

// Float registers a number option.
func (s *Set) Float(p *float64, name, usage string) {
	Func(s, p, name, usage, func(t string) (float64, error) {
		f, err := strconv.ParseFloat(t, 64)
		if err != nil {
			return 0, fmt.Errorf("not a number")
		}
		return f, nil
	}, func(f float64) string { return strconv.FormatFloat(f, 'g', -1, 64) })
}

// Duration registers a duration option (Go syntax: 250ms, 60s, 15m).
func (s *Set) Duration(p *time.Duration, name, usage string) {
	Func(s, p, name, usage, time.ParseDuration, time.Duration.String)
}

// Bool registers a true/false option; the flag may stand alone.
func (s *Set) Bool(p *bool, name, usage string) {
	s.register(newBool(p, name), name, usage)
}

func newBool(p *bool, name string) *value[bool] {
	return &value[bool]{p: p, label: label(name), isBool: true, format: strconv.FormatBool, parse: func(t string) (bool, error) {
		b, err := strconv.ParseBool(t)
		if err != nil {
			return false, fmt.Errorf("want true or false")
		}
		return b, nil
	}}
}

// Switch registers an on/off option (true/false and 1/0 are accepted too).
func (s *Set) Switch(p *bool, name, usage string) {
	Func(s, p, name, usage, func(t string) (bool, error) {
		switch t {
		case "on", "true", "1":
			return true, nil
		case "off", "false", "0":
			return false, nil
		}
		return false, fmt.Errorf("want on or off")
	}, func(b bool) string {
		if b {
			return "on"
		}
		return "off"
	})
}

// Level registers a log level option: debug, info, warn or error.
func (s *Set) Level(p *slog.Level, name, usage string) {
	Func(s, p, name, usage, func(t string) (slog.Level, error) {
		var l slog.Level
		if err := l.UnmarshalText([]byte(t)); err != nil {
			return 0, fmt.Errorf("want debug, info, warn or error")
		}
		return l, nil
	}, func(l slog.Level) string { return strings.ToLower(l.String()) })
}

// CSV registers a comma-separated list option; each setting replaces the list, and
// empty items are dropped.
func (s *Set) CSV(p *[]string, name, usage string) {
	Func(s, p, name, usage, func(t string) ([]string, error) {
		var out []string
		for a := range strings.SplitSeq(t, ",") {
			if a = strings.TrimSpace(a); a != "" {
				out = append(out, a)
			}
		}
		return out, nil
	}, func(v []string) string { return strings.Join(v, ",") })
}

// List registers a repeatable option: each flag adds a value, the environment variable
// holds one value a line, and a layer that sets it replaces what older layers set.
func (s *Set) List(p *[]string, name, usage string) {
	s.register(&listValue{vals: p, layer: &s.layer, set: -1}, name, usage)
}

type listValue struct {
	vals  *[]string
	layer *int
	set   int // the layer that last set the list
}

func (l *listValue) String() string {
	if l == nil || l.vals == nil {
		return ""
	}
	return strings.Join(*l.vals, ",")
}

func (l *listValue) Set(v string) error {
	if l.set != *l.layer {
		*l.vals = nil
		l.set = *l.layer
	}
	*l.vals = append(*l.vals, v)
	return nil
}

// IsLoopback reports whether host (a URL's Hostname) is localhost or a loopback IP
// address: the one place a configuration may name a plain http:// URL.
func IsLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
