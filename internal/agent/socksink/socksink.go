// Package socksink serves the current token on a local Unix socket for programs that
// ask for it when they need it (curl --unix-socket /run/tokenagent/token.sock
// http://agent/token). The socket file's mode is the access control: 0600 by default.
package socksink

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"time"

	"github.com/tokensvc/tokensvc/internal/agent/token"
	"github.com/tokensvc/tokensvc/internal/agent/unixsock"
)

// Config configures a Sink.
type Config struct {
	// Path is the socket file.
	Path string
	// Mode is the socket file's mode; 0 means 0600.
	Mode os.FileMode
	// Now is the device clock; nil means time.Now.
	Now func() time.Time
}

// Sink serves GET /token (the SAS token as text), GET /connection-string and GET
// /token.json (the whole GET /token response). It answers 503 while there is no valid
// token.
type Sink struct {
	now  func() time.Time
	log  *slog.Logger
	path string
	mode os.FileMode
}

// New returns a Sink for c; log nil means slog.Default().
func New(c Config, log *slog.Logger) (*Sink, error) {
	if c.Path == "" {
		return nil, errors.New("token socket: no path")
	}
	if c.Mode == 0 {
		c.Mode = 0o600
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if log == nil {
		log = slog.Default()
	}
	return &Sink{now: c.Now, log: log, path: c.Path, mode: c.Mode}, nil
}

// Handler is the HTTP handler the socket serves, answering from src.
func (s *Sink) Handler(src token.Source) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /token", func(w http.ResponseWriter, r *http.Request) {
		if t, ok := s.valid(w, src); ok {
			s.text(w, t.Response.Token)
		}
	})
	mux.HandleFunc("GET /connection-string", func(w http.ResponseWriter, r *http.Request) {
		t, ok := s.valid(w, src)
		if !ok {
			return
		}
		if t.Response.ConnectionString == nil {
			http.Error(w, "this token has no connection string", http.StatusNotFound)
			return
		}
		s.text(w, *t.Response.ConnectionString)
	})
	mux.HandleFunc("GET /token.json", func(w http.ResponseWriter, r *http.Request) {
		t, ok := s.valid(w, src)
		if !ok {
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		enc := json.NewEncoder(w)
		enc.SetEscapeHTML(false)
		_ = enc.Encode(t.Response)
	})
	return mux
}

func (s *Sink) valid(w http.ResponseWriter, src token.Source) (token.Token, bool) {
	t, _, ok := src.Current()
	if !ok || t.Remaining(s.now()) <= 0 {
		w.Header().Set("Retry-After", "1")
		http.Error(w, "no valid token yet", http.StatusServiceUnavailable)
		return token.Token{}, false
	}
	return t, true
}

func (s *Sink) text(w http.ResponseWriter, v string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write([]byte(v + "\n"))
}

// Run serves the token from src until ctx ends; it returns nil then, or an error when
// the socket cannot be served.
func (s *Sink) Run(ctx context.Context, src token.Source) error {
	ln, err := unixsock.Listen(s.path, s.mode)
	if err != nil {
		return fmt.Errorf("token socket: %w", err)
	}
	srv := &http.Server{Handler: s.Handler(src), ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	s.log.Info("serving the token", "socket", s.path)
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("token socket: %w", err)
	}
	return nil
}
