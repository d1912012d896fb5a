package filestore

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"runtime/debug"

	bolt "go.etcd.io/bbolt"

	"github.com/tokensvc/tokensvc/internal/domain"
	"github.com/tokensvc/tokensvc/internal/store/record"
)

// Layout of the bbolt file (format 2). Bucket and record keys are names in clear —
// hub names, device IDs, setting names and gateway IDs are identifiers, not secrets —
// and every value that holds a record is sealed:
//
//	meta      format -> "2"; salt -> 32 random bytes; keycheck -> sealed "tokensvc";
//	          sum -> CRC-32C of salt || keycheck, so damage is told apart from a wrong key
//	hubs      name -> sealed JSON record.Hub
//	devices   ID -> sealed JSON record.Device (its keys and credentials among them)
//	settings  name -> sealed value
//	hubcount  hub name -> uint64 big-endian: devices on the hub, so DeleteHub need not scan
//	children  gateway ID -> bucket { child ID -> empty }: the parent index
//
// A sealed value is nonce[12] || AES-256-GCM(plaintext) under HKDF-SHA256(master key,
// salt), with the bucket and key as additional data: a value moved to another key or
// bucket, or into another file, does not authenticate. The indexes (hubcount,
// children) are not sealed: they hold only names, and Check recomputes them.
var (
	bucketMeta     = []byte("meta")
	bucketHubs     = []byte("hubs")
	bucketDevices  = []byte("devices")
	bucketSettings = []byte("settings")
	bucketHubCount = []byte("hubcount")
	bucketChildren = []byte("children")

	allBuckets = [][]byte{bucketMeta, bucketHubs, bucketDevices, bucketSettings, bucketHubCount, bucketChildren}

	keyFormat   = []byte("format")
	keySalt     = []byte("salt")
	keyKeyCheck = []byte("keycheck")
	keyMetaSum  = []byte("sum")
)

const (
	boltFormat   = "2"
	recordKeyTag = "tokensvc filestore v2 record key"
	keyCheckText = "tokensvc"
)

// sealer seals and opens the values of one file.
type sealer struct{ aead cipher.AEAD }

func newSealer(master, salt []byte) (*sealer, error) {
	aead, err := deriveAEAD(master, salt, recordKeyTag)
	if err != nil {
		return nil, err
	}
	return &sealer{aead: aead}, nil
}

// deriveAEAD is the AES-256-GCM cipher whose key HKDF-SHA256 derives from the master
// key and the file's salt for purpose info (the v2 record key, the v1 frame key).
func deriveAEAD(master, salt []byte, info string) (cipher.AEAD, error) {
	key, err := hkdf.Key(sha256.New, master, salt, info, 32)
	if err != nil {
		return nil, fmt.Errorf("derive file key: %w", err)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("file cipher: %w", err)
	}
	return cipher.NewGCM(block)
}

// aad binds a value to the bucket and key it is stored under.
func aad(bucket, key []byte) []byte {
	b := make([]byte, 0, len(bucket)+1+len(key))
	b = append(b, bucket...)
	b = append(b, 0)
	return append(b, key...)
}

// seal encrypts plaintext for bucket/key.
func (s *sealer) seal(bucket, key, plaintext []byte) []byte {
	out := make([]byte, nonceSize, nonceSize+len(plaintext)+tagSize)
	rand.Read(out)
	return s.aead.Seal(out, out[:nonceSize], plaintext, aad(bucket, key))
}

// errSealed means a value does not authenticate for the key it is stored under.
var errSealed = errors.New("value does not authenticate")

// open decrypts a value read from bucket/key into a new slice (never nil), so the
// result outlives the transaction that read it.
func (s *sealer) open(bucket, key, sealed []byte) ([]byte, error) {
	if len(sealed) < nonceSize+tagSize {
		return nil, fmt.Errorf("%w: %w (%d bytes)", ErrCorrupt, errSealed, len(sealed))
	}
	pt, err := s.aead.Open(make([]byte, 0, len(sealed)-nonceSize-tagSize), sealed[:nonceSize], sealed[nonceSize:], aad(bucket, key))
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrCorrupt, errSealed)
	}
	return pt, nil
}

// sealJSON encodes v as JSON and seals it for bucket/key, wiping the plaintext.
func (s *sealer) sealJSON(bucket, key []byte, v any) ([]byte, error) {
	pt, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", bucket, err)
	}
	defer clear(pt) // it may hold keys and secrets
	return s.seal(bucket, key, pt), nil
}

// openJSON opens a sealed value and decodes it into v. Unknown fields are refused, as
// in the v1 log: a build that dropped them would lose them at its next write.
func (s *sealer) openJSON(bucket, key, sealed []byte, v any) error {
	pt, err := s.open(bucket, key, sealed)
	if err != nil {
		return err
	}
	defer clear(pt)
	dec := json.NewDecoder(bytes.NewReader(pt))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%w: decode %s %q: %v", ErrCorrupt, bucket, key, err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return fmt.Errorf("%w: decode %s %q: trailing data", ErrCorrupt, bucket, key)
	}
	return nil
}

// sealDevice returns d's stored form.
func (s *sealer) sealDevice(d *domain.Device) ([]byte, error) {
	r := record.FromDevice(d)
	return s.sealJSON(bucketDevices, []byte(d.ID), &r)
}

// recordOfHub returns h's stored form.
func recordOfHub(h *domain.Hub) *record.Hub {
	r := record.FromHub(h)
	return &r
}

// openDevice decodes the device stored under id.
func (s *sealer) openDevice(id, sealed []byte) (domain.Device, error) {
	var r record.Device
	if err := s.openJSON(bucketDevices, id, sealed, &r); err != nil {
		return domain.Device{}, err
	}
	return r.Domain(), nil
}

// openHub decodes the hub stored under name.
func (s *sealer) openHub(name, sealed []byte) (domain.Hub, error) {
	var r record.Hub
	if err := s.openJSON(bucketHubs, name, sealed, &r); err != nil {
		return domain.Hub{}, err
	}
	return r.Domain(), nil
}

// verifyFile is initOrVerify with bbolt's panics and faults on a damaged file made
// ErrCorrupt.
func verifyFile(db *bolt.DB, master []byte) (sl *sealer, err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true)) // faults in bbolt's map: see recoverCorrupt
	defer recoverCorrupt(&err)
	return initOrVerify(db, master)
}

// initOrVerify sets up the meta bucket of a new file, or checks an existing one's
// format and key, returning the file's sealer. A file that has records but no meta
// bucket, or whose key check is damaged, is ErrCorrupt; a key check that fails to
// authenticate is ErrWrongKey.
func initOrVerify(db *bolt.DB, master []byte) (*sealer, error) {
	var sl *sealer
	err := db.Update(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		if meta == nil {
			empty := true
			tx.ForEach(func([]byte, *bolt.Bucket) error { empty = false; return nil })
			if !empty {
				return fmt.Errorf("%w: records without a meta bucket", ErrCorrupt)
			}
			return initFile(tx, master, &sl)
		}
		if f := meta.Get(keyFormat); string(f) != boltFormat {
			return fmt.Errorf("%w: unknown format %q (this build reads %q)", ErrCorrupt, f, boltFormat)
		}
		salt := meta.Get(keySalt)
		if len(salt) != saltSize {
			return fmt.Errorf("%w: salt is %d bytes", ErrCorrupt, len(salt))
		}
		var err error
		if sl, err = newSealer(master, salt); err != nil {
			return err
		}
		check := meta.Get(keyKeyCheck)
		if len(check) != nonceSize+len(keyCheckText)+tagSize {
			return fmt.Errorf("%w: key check is %d bytes", ErrCorrupt, len(check))
		}
		if sum := meta.Get(keyMetaSum); len(sum) != 4 || binary.BigEndian.Uint32(sum) != metaSum(salt, check) {
			return fmt.Errorf("%w: key check checksum mismatch", ErrCorrupt)
		}
		if pt, err := sl.open(bucketMeta, keyKeyCheck, check); err != nil || string(pt) != keyCheckText {
			return ErrWrongKey
		}
		for _, b := range allBuckets {
			if tx.Bucket(b) == nil {
				return fmt.Errorf("%w: bucket %q is missing", ErrCorrupt, b)
			}
		}
		return nil
	})
	return sl, err
}

// initFile creates the buckets and the meta records of a new file.
func initFile(tx *bolt.Tx, master []byte, out **sealer) error {
	salt := make([]byte, saltSize)
	rand.Read(salt)
	sl, err := newSealer(master, salt)
	if err != nil {
		return err
	}
	for _, b := range allBuckets {
		if _, err := tx.CreateBucket(b); err != nil {
			return err
		}
	}
	meta := tx.Bucket(bucketMeta)
	check := sl.seal(bucketMeta, keyKeyCheck, []byte(keyCheckText))
	for k, v := range map[string][]byte{
		string(keyFormat):   []byte(boltFormat),
		string(keySalt):     salt,
		string(keyKeyCheck): check,
		string(keyMetaSum):  binary.BigEndian.AppendUint32(nil, metaSum(salt, check)),
	} {
		if err := meta.Put([]byte(k), v); err != nil {
			return err
		}
	}
	*out = sl
	return nil
}

func metaSum(salt, check []byte) uint32 {
	return crc32.Update(crc32.Checksum(salt, crcTable), crcTable, check)
}
