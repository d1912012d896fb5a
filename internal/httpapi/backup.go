package httpapi

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/tokensvc/tokensvc/internal/domain"
	"github.com/tokensvc/tokensvc/internal/oapi/oapiserver"
)

// BackupStore streams a consistent copy of the embedded store (admin only: the spec
// tags it admin; a POST, so the operator audit records it).
func (s *Server) BackupStore(ctx context.Context, _ oapiserver.BackupStoreRequestObject) (oapiserver.BackupStoreResponseObject, error) {
	if s.deps.Backup == nil {
		return nil, domain.Public(errBadRequest, "this store has no backup through the API: the Vault store is backed up with Vault's own snapshots")
	}
	return backupStream{s: s, ctx: ctx, at: time.Now().UTC()}, nil
}

type backupStream struct {
	s   *Server
	ctx context.Context
	at  time.Time
}

// VisitBackupStoreResponse sends the headers once the copy's length is known, then the
// copy; the write deadline is renewed as it goes, as an import's is, so a large store
// outlives the server's write timeout. An error before the first byte is the usual
// problem; after it the status is out, and a client sees a body shorter than
// Content-Length.
func (b backupStream) VisitBackupStoreResponse(w http.ResponseWriter) error {
	rc := http.NewResponseController(w)
	started := false
	_, err := b.s.deps.Backup.Backup(b.ctx, deadlineWriter{w: w, rc: rc}, func(size int64) {
		h := w.Header()
		h.Set("Content-Type", "application/octet-stream")
		h.Set("Content-Length", strconv.FormatInt(size, 10))
		h.Set("Content-Disposition", `attachment; filename="tokensvc-`+b.at.Format("20060102T150405Z")+`.db"`)
		h.Set("Cache-Control", noStore)
		w.WriteHeader(http.StatusOK)
		started = true
	})
	if err != nil && started {
		b.s.log.LogAttrs(b.ctx, slog.LevelError, "store backup cut off", slog.String("error", err.Error()))
		return nil
	}
	return err
}

// deadlineWriter renews the connection's write deadline before each write.
type deadlineWriter struct {
	w  io.Writer
	rc *http.ResponseController
}

func (d deadlineWriter) Write(p []byte) (int, error) {
	_ = d.rc.SetWriteDeadline(time.Now().Add(importIdle))
	return d.w.Write(p)
}
