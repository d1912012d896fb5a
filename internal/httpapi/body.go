package httpapi

import (
	"bytes"
	"errors"
	"io"
	"mime"
	"net/http"
	"strings"

	"github.com/tokensvc/tokensvc/internal/domain"
	"github.com/tokensvc/tokensvc/internal/strictjson"
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
		if err := strictjson.Check(body); err != nil {
			writeError(s.log, w, r, domain.Public(errBadRequest, "%v", err))
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		next.ServeHTTP(w, r)
	})
}
