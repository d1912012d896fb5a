package filestore

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"slices"

	"github.com/tokensvc/tokensvc/internal/domain"
	"github.com/tokensvc/tokensvc/internal/store"
)

// InjectFault makes the write, sync and truncate steps of s's appends call fn first and
// fail with its error, if any.
func InjectFault(s *Store, fn func(stage string) error) {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	s.fault = fn
}

// WriteSnapshotForTest writes a store file holding hubs and devices without a frame
// per record, so benchmarks can start from 100,000 devices in a second.
func WriteSnapshotForTest(path string, master []byte, hubs []domain.Hub, devices []domain.Device) error {
	st := newState()
	for _, h := range hubs {
		o := op{kind: opPutHub, hub: &h}
		if err := st.validate(&o); err != nil {
			return fmt.Errorf("hub %q: %w", h.Name, err)
		}
		st.apply(&o, false)
	}
	for _, d := range devices {
		o := op{kind: opPutDevice, device: &d}
		if err := st.validate(&o); err != nil {
			return fmt.Errorf("device %q: %w", d.ID, err)
		}
		st.apply(&o, false)
	}
	st.ids = slices.Sorted(maps.Keys(st.devices))
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, _, _, err := writeSnapshot(f, master, st); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// ReplayForTest reads data as a store file in memory, without the disk, so fuzzing
// spends its time parsing. It returns a canonical JSON rendering of the contents (the
// shape of the tests' own dump) and where the last good frame ends.
func ReplayForTest(data, master []byte) (string, int64, error) {
	r, err := replay(bytes.NewReader(data), int64(len(data)), master)
	if err != nil {
		return "", 0, err
	}
	var rep store.Report
	r.st.check(&rep)
	if err := rep.Err(); err != nil {
		return "", 0, fmt.Errorf("replayed state broken: %w", err)
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

// SnapshotForTest replays data and returns the file a compaction would write from it.
func SnapshotForTest(data, master []byte) ([]byte, error) {
	r, err := replay(bytes.NewReader(data), int64(len(data)), master)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	if _, _, _, err := writeSnapshot(&buf, master, r.st); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// SettingNamesForTest lists the settings s holds; the Store API has no such call.
func SettingNamesForTest(s *Store) []string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return slices.Sorted(maps.Keys(s.st.settings))
}

// DropHubFromMemoryForTest forgets hub name in memory only, as a bug that lost it
// would, leaving the file and the devices that use it as they are.
func DropHubFromMemoryForTest(s *Store, name string) {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.st.hubs, name)
}

// EncodeFileForTest returns a valid file whose frames carry the given plaintexts, so
// fuzzing can reach the record decoder behind the authentication.
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
