// Package filesink writes token values to files through templates, for software that
// reads its credentials from a file: each new token re-renders every template and
// replaces the files that changed atomically.
package filesink

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"text/template"

	"github.com/tokensvc/tokensvc/internal/agent/persist"
	"github.com/tokensvc/tokensvc/internal/agent/tmpl"
	"github.com/tokensvc/tokensvc/internal/agent/token"
)

// File is one template and where its output goes.
type File struct {
	Template *template.Template
	Path     string
	// Mode of the file; 0 means 0600.
	Mode os.FileMode
}

// Config configures a Sink.
type Config struct {
	// Files are rendered for every new token.
	Files []File
}

// Sink keeps files up to date.
type Sink struct {
	files []File
	log   *slog.Logger
	last  map[string][]byte
}

// New returns a Sink for c; log nil means slog.Default().
func New(c Config, log *slog.Logger) (*Sink, error) {
	if len(c.Files) == 0 {
		return nil, errors.New("file sink: no files")
	}
	for _, f := range c.Files {
		if f.Template == nil || f.Path == "" {
			return nil, errors.New("file sink: a file needs a template and a path")
		}
	}
	if log == nil {
		log = slog.Default()
	}
	return &Sink{files: c.Files, log: log, last: map[string][]byte{}}, nil
}

// Write renders every template for t and replaces the files whose content changed.
// It returns the first error but tries every file.
func (s *Sink) Write(t token.Token) error {
	var first error
	for _, f := range s.files {
		b, err := tmpl.RenderToken(f.Template, t)
		if err == nil && bytes.Equal(b, s.last[f.Path]) {
			continue
		}
		if err == nil {
			mode := f.Mode
			if mode == 0 {
				mode = 0o600
			}
			err = persist.WriteAtomic(f.Path, b, mode)
		}
		if err != nil {
			s.log.Error("template output failed", "path", f.Path, "error", err.Error())
			if first == nil {
				first = err
			}
			continue
		}
		s.last[f.Path] = b
		s.log.Info("template rendered", "path", f.Path)
	}
	return first
}

// Run writes the files for the current token and every new one until ctx ends; it
// returns nil then. A file that cannot be written is logged and tried again with the
// next token.
func (s *Sink) Run(ctx context.Context, src token.Source) error {
	token.Watch(ctx, src, func(t token.Token) { _ = s.Write(t) })
	return nil
}
