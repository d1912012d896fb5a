// Package tmpl renders token values for legacy software: Go text/template over a View
// of the GET /token response, so a template can name the token, the connection string
// or any field of the MQTT, AMQP or HTTPS profile by a documented, stable name.
package tmpl

import (
	"encoding/json"
	"fmt"
	"text/template"
	"time"

	"github.com/tokensvc/tokensvc/internal/agent/token"
	"github.com/tokensvc/tokensvc/internal/oapi"
)

// Funcs are available in every template:
//
//	unix    Unix seconds of a time ({{ unix .ExpiresAt }})
//	json    a value as JSON ({{ json .MQTT }})
//	deref   the string a pointer field holds, "" for nil, and a string as it is: for
//	        templates written before View ({{ deref .ConnectionString }},
//	        {{ deref .Amqp.Username }}); View's own fields need no deref
var Funcs = template.FuncMap{
	"deref": func(v any) (string, error) {
		switch s := v.(type) {
		case nil:
			return "", nil
		case string:
			return s, nil
		case *string:
			if s == nil {
				return "", nil
			}
			return *s, nil
		}
		return "", fmt.Errorf("deref of %T: want a string or *string", v)
	},
	"unix": func(t time.Time) int64 { return t.Unix() },
	"json": func(v any) (string, error) {
		b, err := json.Marshal(v)
		return string(b), err
	},
}

// Parse parses text as a template named name. Missing fields are errors, not "<no value>".
func Parse(name, text string) (*template.Template, error) {
	t, err := template.New(name).Funcs(Funcs).Option("missingkey=error").Parse(text)
	if err != nil {
		return nil, fmt.Errorf("template %s: %w", name, err)
	}
	return t, nil
}

// Render executes t over the View of r. Errors never include the rendered text.
func Render(t *template.Template, r oapi.TokenResponse) ([]byte, error) {
	return RenderToken(t, token.Token{Response: r})
}
