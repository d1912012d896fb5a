package filestore

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io/fs"
	"os"
)

// bbolt maps the whole file and trusts its meta page: a file cut short behind the
// last page the meta names (a partial copy or restore, a full disk during a copy) has
// pages the map cannot back, and the first read of one kills the process with SIGBUS,
// inside bolt.Open already (it reads the freelist), where no recover helps. checkLength
// reads the meta pages as bbolt does and refuses such a file before bbolt maps it.

// The meta page: a 16-byte page header, then magic, version, page size, flags (4
// bytes each), the root bucket (16), the freelist page, the high-water mark and the
// transaction ID (8 each) and an FNV-64a checksum of the 56 bytes before it, all in
// the machine's byte order.
const (
	boltMagic      = 0xED0CDAED
	boltVersion    = 2
	boltPageHeader = 16
	boltMetaSum    = 56 // bytes the checksum covers
)

type boltMeta struct {
	pageSize  uint32
	highWater uint64 // pages [0, highWater) may be in use
	txid      uint64
}

// readBoltMeta decodes the meta page at off; ok is false if it does not validate.
func readBoltMeta(f *os.File, off int64) (m boltMeta, ok bool) {
	b := make([]byte, boltPageHeader+boltMetaSum+8)
	if _, err := f.ReadAt(b, off); err != nil {
		return m, false
	}
	b = b[boltPageHeader:]
	ne := binary.NativeEndian
	h := fnv.New64a()
	h.Write(b[:boltMetaSum])
	if ne.Uint32(b[0:]) != boltMagic || ne.Uint32(b[4:]) != boltVersion || ne.Uint64(b[boltMetaSum:]) != h.Sum64() {
		return m, false
	}
	return boltMeta{pageSize: ne.Uint32(b[8:]), highWater: ne.Uint64(b[40:]), txid: ne.Uint64(b[48:])}, true
}

// checkLength returns ErrCorrupt if the bbolt file at path is shorter than the pages
// its current meta page (the valid one with the higher transaction ID, as bbolt picks)
// says are in use. A missing file, or one without a valid meta page, is left to bbolt.
func checkLength(path string) error {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	m0, ok0 := readBoltMeta(f, 0)
	second := int64(os.Getpagesize())
	if ok0 {
		second = int64(m0.pageSize)
	}
	m1, ok1 := readBoltMeta(f, second)
	m := m0
	switch {
	case ok0 && ok1 && m1.txid > m0.txid, !ok0 && ok1:
		m = m1
	case !ok0 && !ok1:
		return nil
	}
	if need := int64(m.highWater) * int64(m.pageSize); fi.Size() < need {
		return fmt.Errorf("%w: the file is %d bytes, but its pages end at %d: it was cut short (a partial copy or restore?)", ErrCorrupt, fi.Size(), need)
	}
	return nil
}
