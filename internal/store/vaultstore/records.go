package vaultstore

import (
	"encoding/hex"
	"time"

	"github.com/tokensvc/tokensvc/internal/domain"
	"github.com/tokensvc/tokensvc/internal/store/record"
)

// The records are package record's stored form (which the file store writes too) plus
// the Transit bookkeeping only this store has; JSON flattens the embedded fields, so
// the stored documents are unchanged.

// hubRecord is a stored hub with its Transit key and delete marker.
type hubRecord struct {
	record.Hub
	// TransitKey names the Transit key holding the policy or group key (Transit hubs
	// in modes policy and groupKey).
	TransitKey string `json:"transitKey,omitempty"`
	// DeletingSince is set while DeleteHub checks that no device uses the hub; until it
	// is claimTTL old, CreateDevice refuses the hub.
	DeletingSince *time.Time `json:"deletingSince,omitempty"`
}

// deviceRecord is a stored device with the Transit keys it owns.
type deviceRecord struct {
	record.Device
	// TransitKeys names the Transit keys imported for this device and its modules; the
	// key fields above are empty then. DeleteDevice deletes exactly these.
	TransitKeys []string `json:"transitKeys,omitempty"`
	// MarkerGroup names the group marker on its hub that names this device (groups.go);
	// empty when the device has a single marker of its own.
	MarkerGroup string `json:"markerGroup,omitempty"`
}

// markerRecord says a device uses a hub; the ID is in the path too, but a readable
// value makes the layout self-explaining in the Vault UI.
type markerRecord struct {
	Device string `json:"device"`
}

type settingRecord struct {
	Value []byte `json:"value"`
}

// claimRecord holds a device or hub name while its Transit keys are imported or deleted.
type claimRecord struct {
	Owner     string    `json:"owner"`
	Op        string    `json:"op"`
	ClaimedAt time.Time `json:"claimedAt"`
}

func toHubRecord(h *domain.Hub) hubRecord { return hubRecord{Hub: record.FromHub(h)} }

func (r *hubRecord) hub() domain.Hub { return r.Domain() }

// keyedInTransit reports whether the hub's devices keep their own keys in Transit.
func (r *hubRecord) keyedInTransit() bool {
	return r.Transit && domain.SigningMode(r.Mode) == domain.SignDeviceKey
}

// deleting reports whether a DeleteHub is under way (and not a leftover of a crash).
func (r *hubRecord) deleting(now time.Time) bool {
	return r.DeletingSince != nil && now.Sub(*r.DeletingSince) < claimTTL
}

func toDeviceRecord(d *domain.Device) deviceRecord {
	return deviceRecord{Device: record.FromDevice(d)}
}

// device returns the record as a domain.Device that shares no memory with it.
func (r *deviceRecord) device() domain.Device {
	d := r.Domain()
	if r.Secret != nil {
		d.Auth.Secret = append([]byte{}, r.Secret...)
	}
	return d
}

// hasKeyMaterial reports whether any SAS key field of the device or its modules is set.
func hasKeyMaterial(d *domain.Device) bool {
	if d.PrimaryKey != "" || d.SecondaryKey != "" {
		return true
	}
	for _, m := range d.Modules {
		if m.PrimaryKey != "" || m.SecondaryKey != "" {
			return true
		}
	}
	return false
}

// enc turns a name into one path segment: lowercase hex of its bytes. It is reversible,
// keeps case distinct, needs no escaping for any character a device ID may hold, and
// sorts exactly as the bytes do.
func enc(name string) string { return hex.EncodeToString([]byte(name)) }

// dec reverses enc; ok is false for a segment enc cannot have produced.
func dec(seg string) (string, bool) {
	b, err := hex.DecodeString(seg)
	if err != nil || seg != hex.EncodeToString(b) {
		return "", false
	}
	return string(b), true
}

func hubPath(name string) string       { return "hubs/" + enc(name) }
func devicePath(id string) string      { return "devices/" + enc(id) }
func settingPath(name string) string   { return "settings/" + enc(name) }
func markerFolder(hub string) string   { return "hubdevices/" + enc(hub) }
func markerPath(hub, id string) string { return markerFolder(hub) + "/" + enc(id) }
func claimPath(kind, name string) string {
	return "claims/" + kind + "/" + enc(name)
}
