package filestore

import (
	"bufio"
	"crypto/cipher"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"maps"
	"slices"
)

// The v1 format's reader, kept read-only so Open can migrate a v1 file (migrate.go);
// nothing writes this format any more (the v1 writer lives in legacy_writer_test.go
// for the tests' fixtures).
//
// v1 on-disk layout (all integers big-endian):
//
//	header: magic[8] version[2] salt[32] nonce[12] keycheck[16] crc32c[4]
//	frame:  length[4] crc32c(length)[4] nonce[12] GCM(offset[8] || JSON batch)[length]
//
// The frame key is HKDF-SHA256(master key, salt), so every file (and every compaction)
// has a key of its own: frames cannot be spliced between files written with the same
// master key, and the random 96-bit nonces stay far from their collision bound.
// keycheck is the GCM tag over magic|version|salt with an empty plaintext; it tells a
// wrong master key apart from damage, which the header CRC catches first.
//
// Each frame carries the byte offset it was written at, and replay refuses a frame
// found anywhere else, so frames cannot be reordered, repeated or dropped from the
// middle. The offset is sealed inside the plaintext rather than passed as additional
// data so that a frame still authenticates after bytes before it were lost: that is
// how replay tells a torn final append (nothing authentic after it) from damage in the
// middle (authentic frames after it), even when the damage shifted everything after.
// The length carries a CRC so a damaged length reads as damage, not as a frame running
// past the end of the file.
const (
	magic         = "TKSVCDB\x00"
	formatVersion = 1

	saltSize  = 32
	nonceSize = 12
	tagSize   = 16

	headerSize      = len(magic) + 2 + saltSize + nonceSize + tagSize + 4
	frameHeaderSize = 8
	minFrameSize    = frameHeaderSize + nonceSize + offsetSize + tagSize

	// maxFrameSize bounds one frame's ciphertext, so a damaged or hostile file cannot
	// make Open allocate more than this at once.
	maxFrameSize = 16 << 20
	// snapshotFrameTarget is how much plaintext a compaction packs into one frame:
	// large enough that framing overhead is negligible, far below maxFrameSize.
	snapshotFrameTarget = 1 << 20

	frameKeyInfo = "tokensvc filestore v1 frame key"
	// frameAAD separates frames from the header's key check, which uses the same key.
	frameAAD   = "tokensvc filestore v1 frame"
	offsetSize = 8
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// checkHeader verifies a header read from disk and returns the file's cipher.
func checkHeader(h, master []byte) (cipher.AEAD, error) {
	if len(h) != headerSize {
		return nil, fmt.Errorf("%w: header is %d bytes, want %d", ErrCorrupt, len(h), headerSize)
	}
	if string(h[:len(magic)]) != magic {
		return nil, fmt.Errorf("%w: not a tokensvc file store (bad magic)", ErrCorrupt)
	}
	body, sum := h[:headerSize-4], binary.BigEndian.Uint32(h[headerSize-4:])
	if crc32.Checksum(body, crcTable) != sum {
		return nil, fmt.Errorf("%w: header checksum mismatch", ErrCorrupt)
	}
	p := len(magic)
	if v := binary.BigEndian.Uint16(h[p:]); v != formatVersion {
		return nil, fmt.Errorf("unsupported file format version %d (this build reads %d)", v, formatVersion)
	}
	p += 2
	salt := h[p : p+saltSize]
	p += saltSize
	nonce := h[p : p+nonceSize]
	p += nonceSize
	check := h[p : p+tagSize]
	aead, err := deriveAEAD(master, salt, frameKeyInfo)
	if err != nil {
		return nil, err
	}
	if _, err := aead.Open(nil, nonce, check, h[:len(magic)+2+saltSize]); err != nil {
		return nil, ErrWrongKey
	}
	return aead, nil
}

// openFrame authenticates a frame body (nonce and ciphertext, decrypted in place) and
// returns the offset it was written at and its payload.
func openFrame(aead cipher.AEAD, body []byte) (int64, []byte, bool) {
	ct := body[nonceSize:]
	pt, err := aead.Open(ct[:0], body[:nonceSize], ct, []byte(frameAAD))
	if err != nil || len(pt) < offsetSize {
		return 0, nil, false
	}
	return int64(binary.BigEndian.Uint64(pt)), pt[offsetSize:], true
}

// frameLen validates a frame header and returns the ciphertext length it announces.
func frameLen(fh []byte) (int, bool) {
	if crc32.Checksum(fh[0:4], crcTable) != binary.BigEndian.Uint32(fh[4:8]) {
		return 0, false
	}
	n := binary.BigEndian.Uint32(fh[0:4])
	if n < offsetSize+tagSize || n > maxFrameSize {
		return 0, false
	}
	return int(n), true
}

// replayed is the outcome of reading a whole file.
type replayed struct {
	st   *state
	aead cipher.AEAD
	// end is where the last good frame ends; bytes after it are a torn final append.
	end int64
	ops int
}

// replay reads the file of the given size into memory. A final frame that is short or
// does not authenticate is what a crash during an append leaves, and is reported via
// end < size; any bad frame with an authentic frame somewhere after it is damage to
// acknowledged data, and fails with ErrCorrupt.
func replay(f io.ReaderAt, size int64, master []byte) (*replayed, error) {
	if size < int64(headerSize) {
		return nil, fmt.Errorf("%w: file is %d bytes, shorter than its header", ErrCorrupt, size)
	}
	hdr := make([]byte, headerSize)
	if _, err := f.ReadAt(hdr, 0); err != nil {
		return nil, fmt.Errorf("read header: %w", err)
	}
	aead, err := checkHeader(hdr, master)
	if err != nil {
		return nil, err
	}

	r := &replayed{st: newState(), aead: aead}
	body := size - int64(headerSize)
	br := bufio.NewReaderSize(io.NewSectionReader(f, int64(headerSize), body), int(min(body+1, 1<<20)))
	off := int64(headerSize)
	for off < size {
		payload, n, err := readFrame(br, aead, off, size)
		if errors.Is(err, errBadFrame) {
			later, serr := authenticFrameAfter(f, aead, off+1, size)
			if serr != nil {
				return nil, serr
			}
			if later {
				return nil, fmt.Errorf("%w: damaged frame at offset %d is followed by valid frames", ErrCorrupt, off)
			}
			break
		}
		if err != nil {
			return nil, err
		}
		ops, err := decodeBatch(payload)
		if err != nil {
			return nil, fmt.Errorf("%w: frame at offset %d: %v", ErrCorrupt, off, err)
		}
		for i := range ops {
			if err := r.st.validate(&ops[i]); err != nil {
				return nil, fmt.Errorf("%w: frame at offset %d: %s: %v", ErrCorrupt, off, ops[i].kind, err)
			}
			r.st.apply(&ops[i], false)
		}
		r.ops += len(ops)
		off += n
	}
	r.end = off
	r.st.ids = slices.Sorted(maps.Keys(r.st.devices))
	return r, nil
}

// errBadFrame marks a frame that is short, has a damaged header or fails authentication.
var errBadFrame = errors.New("bad frame")

// readFrame reads and opens the frame at off, returning its plaintext and total length.
func readFrame(br *bufio.Reader, aead cipher.AEAD, off, size int64) ([]byte, int64, error) {
	if size-off < minFrameSize {
		return nil, 0, errBadFrame
	}
	var fh [frameHeaderSize]byte
	if _, err := io.ReadFull(br, fh[:]); err != nil {
		return nil, 0, fmt.Errorf("read frame at offset %d: %w", off, err)
	}
	n, ok := frameLen(fh[:])
	if !ok {
		return nil, 0, errBadFrame
	}
	total := int64(frameHeaderSize + nonceSize + n)
	if total > size-off {
		return nil, 0, errBadFrame
	}
	body := make([]byte, nonceSize+n)
	if _, err := io.ReadFull(br, body); err != nil {
		return nil, 0, fmt.Errorf("read frame at offset %d: %w", off, err)
	}
	at, pt, ok := openFrame(aead, body)
	if !ok {
		return nil, 0, errBadFrame
	}
	if at != off {
		return nil, 0, fmt.Errorf("%w: frame at offset %d was written at offset %d", ErrCorrupt, off, at)
	}
	return pt, total, nil
}

// authenticFrameAfter reports whether any authentic frame, wherever it was written,
// starts at or after from. Only the last append can be torn, so finding one means the
// bad frame before it held acknowledged data. The scan is bytewise because a damaged
// length or lost bytes leave no way to know where the next frame starts; the cheap
// CRC filters candidates before GCM.
func authenticFrameAfter(f io.ReaderAt, aead cipher.AEAD, from, size int64) (bool, error) {
	const chunk = 1 << 20
	buf := make([]byte, min(chunk+frameHeaderSize, max(size-from, 0)))
	for base := from; base+minFrameSize <= size; base += chunk {
		n, err := f.ReadAt(buf[:min(int64(len(buf)), size-base)], base)
		if err != nil && !errors.Is(err, io.EOF) {
			return false, fmt.Errorf("scan for frames: %w", err)
		}
		for i := 0; i < chunk && i+frameHeaderSize <= n; i++ {
			q := base + int64(i)
			l, ok := frameLen(buf[i : i+frameHeaderSize])
			if !ok || q+int64(frameHeaderSize+nonceSize+l) > size {
				continue
			}
			body := make([]byte, nonceSize+l)
			if _, err := f.ReadAt(body, q+frameHeaderSize); err != nil {
				return false, fmt.Errorf("scan for frames: %w", err)
			}
			if _, _, ok := openFrame(aead, body); ok {
				return true, nil
			}
		}
	}
	return false, nil
}
