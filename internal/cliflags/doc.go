package cliflags

import (
	"bufio"
	"fmt"
	"os"
	"regexp"
	"strings"
)

// DocRow is one row of a Markdown configuration table: the flags it documents (without
// the leading '-'), their environment variables (when the table has such a column) and
// their defaults. Defaults is empty when the default cell describes rather than quotes a
// value ("—", "system roots"): such an option's default is empty.
type DocRow struct {
	Line     int
	Flags    []string
	Envs     []string
	Defaults []string
	HasEnv   bool
}

var code = regexp.MustCompile("`([^`]*)`")

// DocTable reads the first table after the line heading in the Markdown md. Its header
// names the columns: "flag" or "option", optionally "environment", and "default". A
// default cell quotes its value in backticks (`60s`, or `1s`, `5m` for a row of two
// flags), optionally followed by a remark in parentheses.
func DocTable(md, heading string) ([]DocRow, error) {
	sc := bufio.NewScanner(strings.NewReader(md))
	sc.Buffer(nil, 1<<20)
	n, found := 0, false
	flagCol, envCol, defCol := -1, -1, -1
	var rows []DocRow
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		if !found {
			found = line == heading
			continue
		}
		if !strings.HasPrefix(line, "|") {
			if flagCol >= 0 {
				break // the table ended
			}
			continue
		}
		cells := strings.Split(strings.Trim(line, "|"), "|")
		for i := range cells {
			cells[i] = strings.TrimSpace(cells[i])
		}
		if flagCol < 0 {
			for i, c := range cells {
				switch strings.ToLower(c) {
				case "flag", "option":
					flagCol = i
				case "environment":
					envCol = i
				case "default":
					defCol = i
				}
			}
			if flagCol < 0 || defCol < 0 {
				return nil, fmt.Errorf("line %d: table header without flag/option and default columns", n)
			}
			continue
		}
		if strings.HasPrefix(cells[0], "---") || len(cells) <= max(flagCol, envCol, defCol) {
			continue
		}
		r := DocRow{Line: n, HasEnv: envCol >= 0}
		for _, m := range code.FindAllStringSubmatch(cells[flagCol], -1) {
			r.Flags = append(r.Flags, strings.TrimPrefix(m[1], "-"))
		}
		if envCol >= 0 {
			for _, m := range code.FindAllStringSubmatch(cells[envCol], -1) {
				r.Envs = append(r.Envs, m[1])
			}
		}
		def := cells[defCol]
		if i := strings.Index(def, " ("); i >= 0 {
			def = def[:i]
		}
		if strings.HasPrefix(def, "`") {
			for _, m := range code.FindAllStringSubmatch(def, -1) {
				r.Defaults = append(r.Defaults, m[1])
			}
		}
		rows = append(rows, r)
	}
	if flagCol < 0 {
		return nil, fmt.Errorf("no table after %q", heading)
	}
	return rows, nil
}

// CheckDocFile reads the table after heading in the Markdown file path and checks it
// with CheckDoc; a file or table that cannot be read is the one error.
func CheckDocFile(path, heading string, fresh func() *Set) []error {
	md, err := os.ReadFile(path)
	if err != nil {
		return []error{err}
	}
	rows, err := DocTable(string(md), heading)
	if err != nil {
		return []error{fmt.Errorf("%s: %w", path, err)}
	}
	return CheckDoc(rows, fresh)
}

// CheckDoc compares documentation rows with the options of the Set fresh returns (a new
// one each call, bound to a new default configuration): every documented flag exists
// with that environment variable and default, every env-only row is a declared secret,
// and every option and secret is documented. It returns one error per disagreement.
func CheckDoc(rows []DocRow, fresh func() *Set) []error {
	s := fresh()
	var errs []error
	bad := func(line int, format string, a ...any) {
		errs = append(errs, fmt.Errorf("line %d: %s", line, fmt.Sprintf(format, a...)))
	}
	secrets := map[string]bool{}
	for _, sec := range s.secrets {
		secrets[sec.env] = true
	}
	seen := map[string]bool{}
	for _, r := range rows {
		if len(r.Flags) == 0 {
			for _, env := range r.Envs {
				seen[env] = true
				if !secrets[env] {
					bad(r.Line, "%s is documented as environment-only but is not a declared secret", env)
				}
			}
			continue
		}
		if r.HasEnv && len(r.Envs) != len(r.Flags) {
			bad(r.Line, "%d flags but %d environment variables", len(r.Flags), len(r.Envs))
			continue
		}
		if len(r.Defaults) > 1 && len(r.Defaults) != len(r.Flags) {
			bad(r.Line, "%d flags but %d defaults", len(r.Flags), len(r.Defaults))
			continue
		}
		for i, name := range r.Flags {
			seen[name] = true
			f := s.Lookup(name)
			if f == nil || !s.IsOption(name) {
				bad(r.Line, "-%s is documented but not an option", name)
				continue
			}
			want := s.prefix + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
			if r.HasEnv {
				want = r.Envs[i]
			}
			if got := s.EnvName(name); got != want {
				bad(r.Line, "-%s: environment variable is %s, documented %s", name, got, want)
			}
			doc := ""
			if len(r.Defaults) > 0 {
				doc = r.Defaults[min(i, len(r.Defaults)-1)]
			}
			if err := sameDefault(fresh(), name, doc); err != nil {
				bad(r.Line, "-%s: %v", name, err)
			}
		}
	}
	for _, o := range s.Options() {
		key := o.Flag
		if key == "" {
			key = o.Env
		}
		if !seen[key] {
			errs = append(errs, fmt.Errorf("option %s (%s) is not documented", key, o.Env))
		}
	}
	return errs
}

// sameDefault reports whether the documented default doc (empty: none) means the flag's
// default: set to doc, the flag reads back as its default did.
func sameDefault(s *Set, name, doc string) error {
	f := s.Lookup(name)
	if doc == "" {
		if f.DefValue != "" {
			return fmt.Errorf("default is %q, documented as none", f.DefValue)
		}
		return nil
	}
	if err := f.Value.Set(doc); err != nil {
		return fmt.Errorf("documented default %q: %w", doc, err)
	}
	if got := f.Value.String(); got != f.DefValue {
		return fmt.Errorf("default is %q, documented %q", f.DefValue, doc)
	}
	return nil
}
