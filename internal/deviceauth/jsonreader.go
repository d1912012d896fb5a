package deviceauth

// jsonReader reads the plain JSON of compact.go token by token. Each method skips the
// whitespace JSON allows before a token; one that does not find its token leaves the
// position where it is (after the whitespace) and reports so, and the caller then gives
// the whole document to encoding/json.
type jsonReader[T ~string | ~[]byte] struct {
	s T
	i int
}

func (r *jsonReader[T]) space() {
	for r.i < len(r.s) {
		switch r.s[r.i] {
		case ' ', '\t', '\n', '\r':
			r.i++
		default:
			return
		}
	}
}

// next consumes the byte c.
func (r *jsonReader[T]) next(c byte) bool {
	r.space()
	if r.i < len(r.s) && r.s[r.i] == c {
		r.i++
		return true
	}
	return false
}

// word consumes the literal w (true, false, null). What follows it is the caller's
// to check (a comma, a closing bracket or the end).
func (r *jsonReader[T]) word(w string) bool {
	r.space()
	if len(r.s)-r.i >= len(w) && string(r.s[r.i:r.i+len(w)]) == w {
		r.i += len(w)
		return true
	}
	return false
}

// plainString consumes a string of printable ASCII without escapes and returns its
// contents, which are its value.
func (r *jsonReader[T]) plainString() (T, bool) {
	r.space()
	var none T
	if r.i >= len(r.s) || r.s[r.i] != '"' {
		return none, false
	}
	for j := r.i + 1; j < len(r.s); j++ {
		switch c := r.s[j]; {
		case c == '"':
			v := r.s[r.i+1 : j]
			r.i = j + 1
			return v, true
		case c < 0x20 || c > 0x7e || c == '\\':
			return none, false
		}
	}
	return none, false
}

// number consumes a number as JSON spells it (-?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?)
// and returns it, or returns an empty value and consumes nothing.
func (r *jsonReader[T]) number() T {
	r.space()
	start, j := r.i, r.i
	if j < len(r.s) && r.s[j] == '-' {
		j++
	}
	switch {
	case j < len(r.s) && r.s[j] == '0':
		j++
	case j < len(r.s) && r.s[j] >= '1' && r.s[j] <= '9':
		j = r.digits(j)
	default:
		return r.s[:0]
	}
	if j < len(r.s) && r.s[j] == '.' {
		if k := r.digits(j + 1); k > j+1 {
			j = k
		} else {
			return r.s[:0]
		}
	}
	if j < len(r.s) && (r.s[j] == 'e' || r.s[j] == 'E') {
		k := j + 1
		if k < len(r.s) && (r.s[k] == '+' || r.s[k] == '-') {
			k++
		}
		if e := r.digits(k); e > k {
			j = e
		} else {
			return r.s[:0]
		}
	}
	r.i = j
	return r.s[start:j]
}

// digits returns the index after the run of digits starting at j.
func (r *jsonReader[T]) digits(j int) int {
	for j < len(r.s) && r.s[j] >= '0' && r.s[j] <= '9' {
		j++
	}
	return j
}

// end reports whether only whitespace is left.
func (r *jsonReader[T]) end() bool {
	r.space()
	return r.i == len(r.s)
}
