package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"

	"github.com/tokensvc/tokensvc/internal/domain"
)

var errUnsupportedMedia = errors.New("unsupported media type")

// strictJSON makes every JSON body mean one thing to every reader: exactly one UTF-8
// JSON value, no duplicate object keys, no content coding. Lenient parsers disagree on
// such inputs (first key wins here, last key there), and a request the validator read
// one way must not be stored another.
func (s *Server) strictJSON(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Streaming imports are read line by line and bounded per line by their handler;
		// reading one whole here would undo that.
		if r.Body == nil || r.Body == http.NoBody || r.Method == http.MethodGet || r.Method == http.MethodDelete || streamsBody(r) {
			next.ServeHTTP(w, r)
			return
		}
		if ce := r.Header.Get("Content-Encoding"); ce != "" && !strings.EqualFold(ce, "identity") {
			writeError(s.log, w, r, domain.Public(errUnsupportedMedia, "Content-Encoding %q is not accepted", ce))
			return
		}
		mt, params, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
		if err != nil || (mt != "application/json" && !strings.HasSuffix(mt, "+json")) {
			// Not JSON: the validator reports the content type the operation wants.
			next.ServeHTTP(w, r)
			return
		}
		if cs, ok := params["charset"]; ok && !strings.EqualFold(cs, "utf-8") {
			writeError(s.log, w, r, domain.Public(errUnsupportedMedia, "charset %q; JSON bodies are UTF-8", cs))
			return
		}
		body, err := io.ReadAll(r.Body)
		if err != nil {
			var tooLarge *http.MaxBytesError
			if errors.As(err, &tooLarge) {
				writeError(s.log, w, r, errTooLarge)
				return
			}
			writeError(s.log, w, r, domain.Public(errBadRequest, "reading the body failed"))
			return
		}
		if err := checkJSON(body); err != nil {
			writeError(s.log, w, r, domain.Public(errBadRequest, "%v", err))
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		next.ServeHTTP(w, r)
	})
}

// checkJSON accepts exactly one JSON value without duplicate keys in any object.
func checkJSON(b []byte) error {
	if !json.Valid(b) {
		return errors.New("request body is not a single valid JSON value")
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	return walkJSON(dec, 0)
}

const maxJSONDepth = 64

func walkJSON(dec *json.Decoder, depth int) error {
	if depth > maxJSONDepth {
		return fmt.Errorf("request body nests deeper than %d levels", maxJSONDepth)
	}
	tok, err := dec.Token()
	if err != nil {
		return errors.New("request body is not valid JSON")
	}
	switch tok {
	case json.Delim('{'):
		seen := map[string]bool{}
		for dec.More() {
			k, err := dec.Token()
			if err != nil {
				return errors.New("request body is not valid JSON")
			}
			key, _ := k.(string)
			if seen[key] {
				return fmt.Errorf("request body repeats the key %q", key)
			}
			seen[key] = true
			if err := walkJSON(dec, depth+1); err != nil {
				return err
			}
		}
		_, err = dec.Token() // '}'
	case json.Delim('['):
		for dec.More() {
			if err := walkJSON(dec, depth+1); err != nil {
				return err
			}
		}
		_, err = dec.Token() // ']'
	}
	if err != nil {
		return errors.New("request body is not valid JSON")
	}
	return nil
}
