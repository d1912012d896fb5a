// Package syncbuf is a byte buffer that one goroutine may write while others read, for
// capturing the logs of a server or process under test.
package syncbuf

import (
	"bytes"
	"sync"
)

// Buffer collects writes for concurrent reads. The zero value is ready to use.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write appends p.
func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

// String returns everything written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
