package httpapi

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/tokensvc/tokensvc/internal/oapi"
)

// encodingJSON is the reference the hand-written encoder must equal byte for byte.
func encodingJSON(t testing.TB, v any) []byte {
	t.Helper()
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

var oddStrings = []string{
	"", "plain", "SharedAccessSignature sr=a%2Fb&sig=x%3D&se=1", `q"uote`, `back\slash`,
	"<html>&amp;", "tab\tnew\nline\r", "\x00\x01\x1f\x7f", "\u2028\u2029", "é ü 東京 🙂",
	"bad \xff utf8", "\b\f",
}

// fill sets every field reachable from v (a pointer) by reflection: pointers and slices
// are nil about a third of the time, so every omitempty branch and every field the
// generated types gain later is exercised without this test naming them.
func fill(r *rand.Rand, v reflect.Value) {
	switch v.Kind() {
	case reflect.Pointer:
		if r.IntN(3) == 0 {
			v.SetZero()
			return
		}
		v.Set(reflect.New(v.Type().Elem()))
		fill(r, v.Elem())
	case reflect.Struct:
		if v.Type() == reflect.TypeFor[time.Time]() {
			locs := []*time.Location{time.UTC, time.FixedZone("", 5*3600+30*60), time.FixedZone("", -8*3600)}
			t := time.Unix(r.Int64N(4_000_000_000), 0).In(locs[r.IntN(len(locs))])
			if r.IntN(2) == 0 {
				t = t.Add(time.Duration(r.IntN(1e9)))
			}
			v.Set(reflect.ValueOf(t))
			return
		}
		for i := range v.NumField() {
			fill(r, v.Field(i))
		}
	case reflect.Slice:
		if r.IntN(3) == 0 {
			v.SetZero()
			return
		}
		n := r.IntN(4)
		v.Set(reflect.MakeSlice(v.Type(), n, n))
		for i := range n {
			fill(r, v.Index(i))
		}
	case reflect.Map:
		if r.IntN(3) == 0 {
			v.SetZero()
			return
		}
		v.Set(reflect.MakeMap(v.Type()))
		for range r.IntN(4) {
			k, e := reflect.New(v.Type().Key()).Elem(), reflect.New(v.Type().Elem()).Elem()
			fill(r, k)
			fill(r, e)
			v.SetMapIndex(k, e)
		}
	case reflect.String:
		v.SetString(oddStrings[r.IntN(len(oddStrings))])
	case reflect.Int:
		v.SetInt(r.Int64N(1<<40) - 1<<39)
	default:
		panic("fill: unhandled kind " + v.Kind().String() + " in " + v.Type().String())
	}
}

func TestTokenJSONMatchesEncodingJSON(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 5000 {
		var body oapi.TokenResponse
		fill(r, reflect.ValueOf(&body).Elem())
		want := encodingJSON(t, body)
		got := appendTokenResponse(nil, &body)
		if !bytes.Equal(got, want) {
			t.Fatalf("case %d:\n got %s\nwant %s", i, got, want)
		}
	}
}

// TestStringEveryByteAtEveryPlace: appendString checks eight bytes at a time; every byte
// value, at every place of a word and of the tail, is escaped as encoding/json does.
func TestStringEveryByteAtEveryPlace(t *testing.T) {
	base := []byte("abcdefghijklmnopq") // two words and a tail of one
	for c := range 256 {
		for i := range base {
			s := slices.Clone(base)
			s[i] = byte(c)
			want := bytes.TrimSuffix(encodingJSON(t, string(s)), []byte("\n"))
			if got := appendString(nil, string(s)); !bytes.Equal(got, want) {
				t.Fatalf("byte %#x at %d: got %s, want %s", c, i, got, want)
			}
		}
	}
}

func FuzzTokenJSONString(f *testing.F) {
	for _, s := range oddStrings {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		want := bytes.TrimSuffix(encodingJSON(t, s), []byte("\n"))
		if got := appendString(nil, s); !bytes.Equal(got, want) {
			t.Fatalf("appendString(%q) = %s, want %s", s, got, want)
		}
	})
}

// TestNothingToValidate pins which operations skip the spec validator when they carry no
// query string: only those where it could not reject anything.
func TestNothingToValidate(t *testing.T) {
	spec, err := loadSpec()
	if err != nil {
		t.Fatal(err)
	}
	rules, err := specRules(spec)
	if err != nil {
		t.Fatal(err)
	}
	for op, want := range map[string]bool{
		"getToken":     true,  // optional query parameters only, no body
		"getHealthz":   true,  // nothing at all
		"createDevice": false, // a body
		"getDevice":    false, // a path parameter
		"createHub":    false,
	} {
		rule, ok := rules[op]
		if !ok {
			t.Fatalf("operation %s missing from %v", op, rules)
		}
		if v := rule.trivial; v != want {
			t.Errorf("%s: %v, want %v", op, v, want)
		}
	}
}
