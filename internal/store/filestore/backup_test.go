package filestore_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/tokensvc/tokensvc/internal/store/filestore"
)

// TestBackupWhileWriting: a copy taken while devices are being created opens with the
// same key, passes Check, holds every device acknowledged before it began and only
// whole records, announces its exact length, and opens with no other key.
func TestBackupWhileWriting(t *testing.T) {
	ctx := context.Background()
	key := newKey(t)
	st := mustOpen(t, storePath(t), key)
	must(t, st.CreateHub(ctx, iotHub("main")))
	for i := range 200 {
		must(t, st.CreateDevice(ctx, device(fmt.Sprintf("before-%03d", i), "main")))
	}

	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if err := st.CreateDevice(ctx, device(fmt.Sprintf("during-%05d", i), "main")); err != nil {
				t.Error(err)
				return
			}
		}
	})
	var buf bytes.Buffer
	var announced int64 = -1
	n, err := st.Backup(ctx, &buf, func(size int64) { announced = size })
	close(stop)
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	if n != int64(buf.Len()) || announced != n {
		t.Fatalf("backup wrote %d bytes, buffer holds %d, announced %d: want all equal", n, buf.Len(), announced)
	}
	mustClose(t, st)

	path := filepath.Join(t.TempDir(), "restored.db")
	must(t, os.WriteFile(path, buf.Bytes(), 0o600))
	if _, err := filestore.Open(path, newKey(t)); !errors.Is(err, filestore.ErrWrongKey) {
		t.Fatalf("the copy with another key: got %v, want ErrWrongKey", err)
	}
	restored := mustOpen(t, path, key)
	defer mustClose(t, restored)
	rep, err := restored.Check(ctx)
	if err != nil || len(rep.Problems) > 0 {
		t.Fatalf("Check of the copy: %v %v", rep.Problems, err)
	}
	for i := range 200 {
		id := fmt.Sprintf("before-%03d", i)
		if _, err := restored.GetDevice(ctx, id); err != nil {
			t.Fatalf("device %s acknowledged before the backup: %v", id, err)
		}
	}
}

// TestBackupAfterClose: a closed store refuses.
func TestBackupAfterClose(t *testing.T) {
	st := mustOpen(t, storePath(t), newKey(t))
	mustClose(t, st)
	if _, err := st.Backup(context.Background(), &bytes.Buffer{}, nil); !errors.Is(err, filestore.ErrClosed) {
		t.Fatalf("got %v, want ErrClosed", err)
	}
}
