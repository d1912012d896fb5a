package filestore

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"slices"

	bolt "go.etcd.io/bbolt"

	"github.com/tokensvc/tokensvc/internal/domain"
)

// WithFaultForTest makes each migration step call fn first and fail, as a crash
// there would, with fn's error (the step names are in migrate.go).
func WithFaultForTest(fn func(step string) error) Option {
	return func(o *options) { o.fault = fn }
}

// WriteSnapshotForTest writes a v1 store file holding hubs and devices, as the v1
// store's compaction did (the benchmarks of both revisions use it).
func WriteSnapshotForTest(path string, master []byte, hubs []domain.Hub, devices []domain.Device) error {
	return WriteV1ForTest(path, master, hubs, devices, nil)
}

// WriteV1ForTest writes a v1 store file with the v1 writer: a snapshot of hubs,
// devices and settings, then one frame per ID in deleteAfter deleting that device, so
// the file has the history a long-running v1 store leaves.
func WriteV1ForTest(path string, master []byte, hubs []domain.Hub, devices []domain.Device, settings map[string][]byte, deleteAfter ...string) error {
	st := newState()
	var ops []op
	for _, h := range hubs {
		ops = append(ops, op{kind: opPutHub, hub: &h})
	}
	for _, d := range devices {
		ops = append(ops, op{kind: opPutDevice, device: &d})
	}
	for _, name := range slices.Sorted(maps.Keys(settings)) {
		ops = append(ops, op{kind: opPutSetting, name: name, value: settings[name]})
	}
	for _, o := range ops {
		if err := st.validate(&o); err != nil {
			return fmt.Errorf("%s: %w", o.kind, err)
		}
		st.apply(&o, false)
	}
	st.ids = slices.Sorted(maps.Keys(st.devices))
	var buf bytes.Buffer
	aead, off, _, err := writeSnapshot(&buf, master, st)
	if err != nil {
		return err
	}
	for _, id := range deleteAfter {
		enc, err := encodeOp(&op{kind: opDeleteDevice, name: id})
		if err != nil {
			return err
		}
		frame, err := sealFrame(aead, off, joinBatch([][]byte{enc}))
		if err != nil {
			return err
		}
		buf.Write(frame)
		off += int64(len(frame))
	}
	return os.WriteFile(path, buf.Bytes(), 0o600)
}

// ReplayForTest reads data as a v1 store file in memory, without the disk, so fuzzing
// spends its time parsing. It returns a canonical JSON rendering of the contents (the
// shape of the tests' own dump) and where the last good frame ends.
func ReplayForTest(data, master []byte) (string, int64, error) {
	r, err := replay(bytes.NewReader(data), int64(len(data)), master)
	if err != nil {
		return "", 0, err
	}
	var c struct {
		Hubs     []domain.Hub
		Devices  []domain.Device
		Settings map[string][]byte
	}
	c.Hubs = []domain.Hub{} // as ListHubs returns
	for _, name := range slices.Sorted(maps.Keys(r.st.hubs)) {
		c.Hubs = append(c.Hubs, r.st.hubs[name])
	}
	for _, id := range r.st.ids {
		c.Devices = append(c.Devices, r.st.devices[id])
	}
	c.Settings = r.st.settings
	b, err := json.MarshalIndent(c, "", " ")
	if err != nil {
		return "", 0, err
	}
	return string(b), r.end, nil
}

// SettingNamesForTest returns the names of the settings data holds as a v1 file.
func SettingNamesForTest(data, master []byte) []string {
	r, err := replay(bytes.NewReader(data), int64(len(data)), master)
	if err != nil {
		return nil
	}
	return slices.Sorted(maps.Keys(r.st.settings))
}

// EncodeFileForTest returns a valid v1 file whose frames carry the given plaintexts,
// so fuzzing can reach the v1 record decoder behind the authentication.
func EncodeFileForTest(master []byte, payloads ...[]byte) ([]byte, error) {
	file, aead, err := newHeader(master)
	if err != nil {
		return nil, err
	}
	for _, p := range payloads {
		frame, err := sealFrame(aead, int64(len(file)), p)
		if err != nil {
			return nil, err
		}
		file = append(file, frame...)
	}
	return file, nil
}

// DecodeDeviceForTest seals plaintext as the stored form of device id under a fresh
// salt and decodes it back, so fuzzing reaches the record decoder behind the
// authentication. It also returns the device re-sealed and decoded again.
func DecodeDeviceForTest(master []byte, id string, plaintext []byte) (domain.Device, domain.Device, error) {
	sl, err := newSealer(master, make([]byte, saltSize))
	if err != nil {
		return domain.Device{}, domain.Device{}, err
	}
	d, err := sl.openDevice([]byte(id), sl.seal(bucketDevices, []byte(id), plaintext))
	if err != nil {
		return domain.Device{}, domain.Device{}, err
	}
	again, err := sl.sealDevice(&d)
	if err != nil {
		return d, domain.Device{}, err
	}
	d2, err := sl.openDevice([]byte(d.ID), again)
	return d, d2, err
}

// OpenSealedForTest opens raw bytes as a sealed value of bucket/key.
func OpenSealedForTest(master []byte, bucket, key string, sealed []byte) ([]byte, error) {
	sl, err := newSealer(master, make([]byte, saltSize))
	if err != nil {
		return nil, err
	}
	return sl.open([]byte(bucket), []byte(key), sealed)
}

// CorruptDeviceForTest overwrites the stored value of device id with the value of
// device from, as someone editing the file could: it must not authenticate.
func CorruptDeviceForTest(s *Store, id, from string) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketDevices)
		return b.Put([]byte(id), bytes.Clone(b.Get([]byte(from))))
	})
}
