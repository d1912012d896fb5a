package target

import (
	"bytes"
	"encoding/json"
	"reflect"
	"slices"
	"strings"

	"github.com/tokensvc/tokensvc/internal/domain"
)

// A kind's own hub fields travel in domain.Hub.Settings, one entry per API field: the
// field's name and the JSON text of its value. Only the kind reads them, into a struct
// of its own with DecodeSettings, and writes its defaults back with EncodeSettings; the
// stores and the API carry them unread.

// CheckSettings refuses settings the kind does not take; allowed names those it does.
func CheckSettings(h domain.Hub, allowed ...string) error {
	for name := range h.Settings {
		if !slices.Contains(allowed, name) {
			if len(allowed) == 0 {
				return domain.Invalid("hubs of kind %s take no field %q", h.Kind, name)
			}
			return domain.Invalid("hubs of kind %s take the fields %s, not %q", h.Kind, strings.Join(allowed, ", "), name)
		}
	}
	return nil
}

// DecodeSettings reads h's settings into v, a pointer to a struct whose json tags name
// the fields the kind takes. A field the kind does not take, or a value of the wrong
// type, is an error wrapping domain.ErrInvalid that names the field. Settings the
// kind has stored read in one decode; only a failure decodes field by field, to say
// which field.
func DecodeSettings(h domain.Hub, v any) error {
	if err := CheckSettings(h, settingNames(v)...); err != nil {
		return err
	}
	if len(h.Settings) == 0 {
		return nil
	}
	var b bytes.Buffer
	b.WriteByte('{')
	for name, text := range h.Settings {
		if b.Len() > 1 {
			b.WriteByte(',')
		}
		nb, _ := json.Marshal(name) // a string always marshals
		b.Write(nb)
		b.WriteByte(':')
		b.WriteString(text)
	}
	b.WriteByte('}')
	if json.Unmarshal(b.Bytes(), v) == nil {
		return nil
	}
	for name, text := range h.Settings {
		obj, err := json.Marshal(map[string]json.RawMessage{name: json.RawMessage(text)})
		if err != nil {
			return domain.Invalid("%s: not a JSON value", name)
		}
		if err := json.Unmarshal(obj, v); err != nil {
			return domain.Invalid("%s: %s", name, typeProblem(err))
		}
	}
	return nil
}

// EncodeSettings writes v's non-empty fields back as h's settings (defaults filled in
// by the kind are then stored and shown).
func EncodeSettings(h *domain.Hub, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		return err
	}
	h.Settings = nil
	if len(m) > 0 {
		h.Settings = make(map[string]string, len(m))
		for k, raw := range m {
			h.Settings[k] = string(raw)
		}
	}
	return nil
}

// settingNames returns the json field names of the struct v points to. The fields of
// an embedded struct without a json name count as the outer struct's own, as
// encoding/json reads them, so kinds can share one settings struct by embedding it.
func settingNames(v any) []string {
	names := fieldNames(reflect.TypeOf(v).Elem(), nil)
	slices.Sort(names)
	return names
}

func fieldNames(t reflect.Type, names []string) []string {
	for f := range t.Fields() {
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "" && f.Anonymous && f.Type.Kind() == reflect.Struct {
			names = fieldNames(f.Type, names)
			continue
		}
		if name != "" && name != "-" {
			names = append(names, name)
		}
	}
	return names
}

// typeProblem says what was wrong with a value, without echoing it.
func typeProblem(err error) string {
	if te, ok := err.(*json.UnmarshalTypeError); ok {
		return "must be " + jsonKind(te.Type)
	}
	return "not a valid value"
}

func jsonKind(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Bool:
		return "a boolean"
	case reflect.String:
		return "a string"
	case reflect.Int, reflect.Int64, reflect.Int32, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "an integer"
	case reflect.Slice:
		return "an array"
	case reflect.Map, reflect.Struct:
		return "an object"
	}
	return "a " + t.String()
}
