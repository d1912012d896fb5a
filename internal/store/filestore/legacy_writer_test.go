package filestore

import (
	"bufio"
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"hash/crc32"
	"io"
	"maps"
	"slices"

	"github.com/tokensvc/tokensvc/internal/store/record"
)

// The old (v1) log writer, kept only so tests can write files in the old format
// that Open must migrate.

// newHeader picks a fresh salt and returns the header bytes and the file's cipher.
func newHeader(master []byte) ([]byte, cipher.AEAD, error) {
	salt := make([]byte, saltSize)
	rand.Read(salt)
	aead, err := deriveAEAD(master, salt, frameKeyInfo)
	if err != nil {
		return nil, nil, err
	}
	h := make([]byte, 0, headerSize)
	h = append(h, magic...)
	h = binary.BigEndian.AppendUint16(h, formatVersion)
	h = append(h, salt...)
	// GCM forbids additional data overlapping dst, so the authenticated prefix is copied.
	aad := slices.Clone(h)
	var nonce [nonceSize]byte
	rand.Read(nonce[:])
	h = append(h, nonce[:]...)
	h = aead.Seal(h, nonce[:], nil, aad)
	h = binary.BigEndian.AppendUint32(h, crc32.Checksum(h, crcTable))
	return h, aead, nil
}

// sealFrame encrypts payload as the frame that will start at byte offset off.
func sealFrame(aead cipher.AEAD, off int64, payload []byte) ([]byte, error) {
	n := offsetSize + len(payload) + tagSize
	if n > maxFrameSize {
		return nil, fmt.Errorf("record of %d bytes exceeds the %d byte frame limit", len(payload), maxFrameSize-tagSize-offsetSize)
	}
	pt := make([]byte, 0, offsetSize+len(payload))
	pt = binary.BigEndian.AppendUint64(pt, uint64(off))
	pt = append(pt, payload...)
	var nonce [nonceSize]byte
	rand.Read(nonce[:])
	buf := make([]byte, frameHeaderSize, frameHeaderSize+nonceSize+n)
	binary.BigEndian.PutUint32(buf[0:4], uint32(n))
	binary.BigEndian.PutUint32(buf[4:8], crc32.Checksum(buf[0:4], crcTable))
	buf = append(buf, nonce[:]...)
	return aead.Seal(buf, nonce[:], pt, []byte(frameAAD)), nil
}

// writeSnapshot writes a complete file holding st to w, which must be empty, and
// returns the new file's cipher, its size and the number of records written.
func writeSnapshot(w io.Writer, master []byte, st *state) (cipher.AEAD, int64, int, error) {
	hdr, aead, err := newHeader(master)
	if err != nil {
		return nil, 0, 0, err
	}
	bw := bufio.NewWriterSize(w, 1<<20)
	if _, err := bw.Write(hdr); err != nil {
		return nil, 0, 0, err
	}
	off := int64(len(hdr))
	var batch [][]byte
	batchSize := 0
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		frame, err := sealFrame(aead, off, joinBatch(batch))
		if err != nil {
			return err
		}
		if _, err := bw.Write(frame); err != nil {
			return err
		}
		off += int64(len(frame))
		batch, batchSize = batch[:0], 0
		return nil
	}
	count := 0
	add := func(o op) error {
		enc, err := encodeOp(&o)
		if err != nil {
			return err
		}
		if batchSize+len(enc) > snapshotFrameTarget {
			if err := flush(); err != nil {
				return err
			}
		}
		batch = append(batch, enc)
		batchSize += len(enc) + 1
		count++
		return nil
	}

	// Hubs go first because replay insists a device's hub already exists.
	for _, name := range slices.Sorted(maps.Keys(st.hubs)) {
		h := st.hubs[name]
		if err := add(op{kind: opPutHub, hub: &h}); err != nil {
			return nil, 0, 0, err
		}
	}
	for _, id := range st.ids {
		d := st.devices[id]
		if err := add(op{kind: opPutDevice, device: &d}); err != nil {
			return nil, 0, 0, err
		}
	}
	for _, name := range slices.Sorted(maps.Keys(st.settings)) {
		if err := add(op{kind: opPutSetting, name: name, value: st.settings[name]}); err != nil {
			return nil, 0, 0, err
		}
	}
	if err := flush(); err != nil {
		return nil, 0, 0, err
	}
	if err := bw.Flush(); err != nil {
		return nil, 0, 0, err
	}
	return aead, off, count, nil
}

func encodeOp(o *op) ([]byte, error) {
	w := wireOp{Op: o.kind, Name: o.name, Value: o.value}
	if o.hub != nil {
		h := record.FromHub(o.hub)
		w.Hub = &h
	}
	if o.device != nil {
		d := record.FromDevice(o.device)
		w.Device = &d
	}
	b, err := json.Marshal(&w)
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", o.kind, err)
	}
	return b, nil
}

// joinBatch assembles encoded ops into the JSON document one frame carries.
func joinBatch(ops [][]byte) []byte {
	n := len(`{"ops":[]}`) + len(ops)
	for _, o := range ops {
		n += len(o)
	}
	b := make([]byte, 0, n)
	b = append(b, `{"ops":[`...)
	for i, o := range ops {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, o...)
	}
	return append(b, "]}"...)
}
