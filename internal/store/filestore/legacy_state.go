package filestore

import (
	"errors"
	"fmt"
	"slices"

	"github.com/tokensvc/tokensvc/internal/domain"
	"github.com/tokensvc/tokensvc/internal/store"
)

// Part of the v1 reader (see legacy_format.go), used only to migrate v1 files.

// state is the in-memory image of the log. It owns every slice it holds: records are
// cloned on the way in and on the way out.
type state struct {
	hubs    map[string]domain.Hub
	devices map[string]domain.Device
	// ids holds the device IDs in byte order so a page is a binary search and a slice.
	ids []string
	// hubDevices counts devices per hub, so DeleteHub need not scan every device.
	hubDevices map[string]int
	settings   map[string][]byte
}

func newState() *state {
	return &state{
		hubs:       map[string]domain.Hub{},
		devices:    map[string]domain.Device{},
		hubDevices: map[string]int{},
		settings:   map[string][]byte{},
	}
}

var errEmptyName = errors.New("empty name")

// validate says whether o may be applied. The same rules guard writes and replay, so
// nothing the store writes can make its own file unreadable.
func (st *state) validate(o *op) error {
	switch o.kind {
	case opPutHub:
		if o.hub == nil || o.hub.Name == "" {
			return errEmptyName
		}
	case opDeleteHub:
		if _, ok := st.hubs[o.name]; !ok {
			return store.ErrNotFound
		}
		if n := st.hubDevices[o.name]; n > 0 {
			return fmt.Errorf("%d devices still use it: %w", n, store.ErrConflict)
		}
	case opPutDevice:
		if o.device == nil || o.device.ID == "" {
			return errEmptyName
		}
		if _, ok := st.hubs[o.device.Hub]; !ok {
			return fmt.Errorf("hub %q: %w", o.device.Hub, store.ErrNotFound)
		}
	case opDeleteDevice:
		if _, ok := st.devices[o.name]; !ok {
			return store.ErrNotFound
		}
	case opPutSetting:
		if o.name == "" {
			return errEmptyName
		}
	default:
		return fmt.Errorf("unknown operation %q", o.kind)
	}
	return nil
}

// apply makes a validated change. keepSorted maintains ids incrementally; replay
// passes false and sorts once at the end, since inserting 100,000 IDs one by one
// into a sorted slice is quadratic.
func (st *state) apply(o *op, keepSorted bool) {
	switch o.kind {
	case opPutHub:
		st.hubs[o.hub.Name] = o.hub.Clone()
	case opDeleteHub:
		delete(st.hubs, o.name)
		delete(st.hubDevices, o.name)
	case opPutDevice:
		d := *o.device
		old, existed := st.devices[d.ID]
		if existed {
			st.release(old.Hub)
		}
		st.hubDevices[d.Hub]++
		st.devices[d.ID] = d
		if !existed && keepSorted {
			i, _ := slices.BinarySearch(st.ids, d.ID)
			st.ids = slices.Insert(st.ids, i, d.ID)
		}
	case opDeleteDevice:
		st.release(st.devices[o.name].Hub)
		delete(st.devices, o.name)
		if keepSorted {
			if i, ok := slices.BinarySearch(st.ids, o.name); ok {
				st.ids = slices.Delete(st.ids, i, i+1)
			}
		}
	case opPutSetting:
		v := o.value
		if v == nil {
			v = []byte{}
		}
		st.settings[o.name] = v
	}
}

func (st *state) release(hub string) {
	if st.hubDevices[hub]--; st.hubDevices[hub] <= 0 {
		delete(st.hubDevices, hub)
	}
}
