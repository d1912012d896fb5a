package vaultstore

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/tokensvc/tokensvc/internal/store"
)

// Check walks every record under the prefix and reports what the write order (see the
// package documentation) says can never be there, and the harmless leftovers it says
// may be.
//
// Problems: a record filed under a name it does not hold, or under a path segment
// enc cannot have produced; a device whose hub record is missing; a device without
// its hub's marker; a device on a hub that keeps device keys in Transit whose record
// lacks a primary key name for the device or one of its modules, names a key that is
// not its own, holds key material itself, or names a Transit key that does not exist;
// Transit key names on a device of any other hub, or key material on a device of a
// Transit hub; a Transit hub signing with a policy or group key whose record holds the
// key, names another key than its own, or whose key does not exist; a non-Transit hub
// naming a Transit key.
//
// Leftovers: markers, and names in group markers, whose device is gone or on another
// hub (one leftover per marker or name), claims, hubs marked as
// being deleted, and Transit keys under the store's names that no record refers to.
// Listing Transit keys takes LIST on {TransitMount}/keys, which the least-privilege
// policy does not grant; without it that part lands in Report.Unchecked. A Transit key
// is probed with an HMAC of one byte, which the policy does grant.
//
// Check reads the whole store, so run it while no writes are under way: a write that
// races the walk can show up as a problem or a leftover it would not leave. Its error
// is a failure to read (store.ErrUnavailable, ErrPermissionDenied), never an
// inconsistency.
func (s *Store) Check(ctx context.Context) (store.Report, error) {
	if err := s.live(); err != nil {
		return store.Report{}, fmt.Errorf("check: %w", err)
	}
	c := &checkRun{s: s, keys: map[string]bool{}}
	hubs, err := c.hubs(ctx)
	if err == nil {
		err = c.markers(ctx)
	}
	if err == nil {
		err = c.devices(ctx, hubs)
	}
	if err == nil {
		c.staleMarkers()
	}
	if err == nil {
		err = c.claims(ctx)
	}
	if err == nil {
		err = c.orphanKeys(ctx)
	}
	if err != nil {
		return store.Report{}, fmt.Errorf("check: %w", err)
	}
	return c.rep, nil
}

// checkRun is one Check's state: the report and what the later steps need from the
// earlier ones.
type checkRun struct {
	s   *Store
	mu  sync.Mutex // guards rep and keys while devices are checked concurrently
	rep store.Report
	// deviceHub maps each device ID to its hub, for the markers.
	deviceHub map[string]string
	// marked maps each hub folder under hubdevices to the devices its markers name,
	// each to where: "" for its single marker, else the group markers naming it.
	marked map[string]map[string][]string
	// keys holds every Transit key name a record refers to.
	keys map[string]bool
}

func (c *checkRun) problemf(record, format string, args ...any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.rep.Problemf(record, format, args...)
}

func (c *checkRun) leftover(kind store.LeftoverKind, name, detail string) {
	c.rep.Leftovers = append(c.rep.Leftovers, store.Leftover{Kind: kind, Name: name, Detail: detail})
}

// halfDeleted reports the hub or device record name as the leftover of an interrupted
// delete when err, from reading it, says only its metadata is left.
func (c *checkRun) halfDeleted(err error, name string) {
	if errors.Is(err, errHalfDeleted) {
		c.mu.Lock()
		defer c.mu.Unlock()
		c.leftover(store.LeftoverDeletedRecord, name, "delete interrupted, metadata without data: reads as absent; the next create of this name replaces it")
	}
}

// names lists folder rel and decodes its entries, reporting any enc cannot have made.
func (c *checkRun) names(ctx context.Context, rel string) ([]string, error) {
	keys, err := c.s.kvList(ctx, rel)
	if err != nil {
		return nil, err
	}
	slices.Sort(keys)
	out := make([]string, 0, len(keys))
	for _, k := range keys {
		name, ok := dec(k)
		if !ok {
			c.problemf("record "+rel+"/"+k, "its name is not one the store writes (lowercase hex)")
			continue
		}
		out = append(out, name)
	}
	return out, nil
}

func (c *checkRun) hubs(ctx context.Context) (map[string]hubRecord, error) {
	names, err := c.names(ctx, "hubs")
	if err != nil {
		return nil, err
	}
	hubs := map[string]hubRecord{}
	for _, name := range names {
		var rec hubRecord
		if _, err := c.s.kvRead(ctx, c.s.cfg.WriteTimeout, hubPath(name), &rec); errors.Is(err, store.ErrNotFound) {
			c.halfDeleted(err, name) // or deleted since the LIST
			continue
		} else if err != nil {
			return nil, err
		}
		what := fmt.Sprintf("hub %q", name)
		if rec.Name != name {
			c.problemf(what, "the record names hub %q", rec.Name)
			continue
		}
		hubs[name] = rec
		c.rep.Hubs++
		if rec.DeletingSince != nil {
			state := "a delete under way"
			if !rec.deleting(c.s.now()) {
				state = "left by an interrupted delete"
			}
			c.leftover(store.LeftoverDeletingMark, name, fmt.Sprintf("since %s, %s", rec.DeletingSince.Format(time.RFC3339), state))
		}
		if rec.TransitKey != "" {
			c.keys[rec.TransitKey] = true
		}
		if rec.Transit && rec.PolicyKey != "" {
			c.problemf(what, "keeps its keys in Transit, yet its record holds a key")
		}
		switch {
		case !rec.Transit && rec.TransitKey != "":
			c.problemf(what, "names Transit key %s but does not keep its keys in Transit", rec.TransitKey)
		case !rec.Transit:
		case rec.keyedInTransit() && rec.TransitKey != "":
			c.problemf(what, "signs with device keys, yet names a Transit key of its own")
		case rec.keyedInTransit():
		case rec.TransitKey != c.s.hubKeyName(name):
			c.problemf(what, "names Transit key %q, not its own %s", rec.TransitKey, c.s.hubKeyName(name))
		default:
			if err := c.transitKey(ctx, what, rec.TransitKey); err != nil {
				return nil, err
			}
		}
	}
	return hubs, nil
}

// transitKey reports a Transit key that does not exist. It probes with an HMAC, which
// the least-privilege policy allows, where reading the key would need more.
func (c *checkRun) transitKey(ctx context.Context, what, name string) error {
	path := c.s.cfg.TransitMount + "/hmac/" + name + "/sha2-256"
	err := c.s.put(ctx, c.s.cfg.WriteTimeout, path, []byte(`{"input":"AA=="}`), nil)
	switch {
	case err == nil:
		return nil
	case vaultSays(err, http.StatusBadRequest, "key not found"):
		c.problemf(what, "its Transit key %s does not exist", name)
		return nil
	}
	return c.s.classify(ctx, err, "write", path)
}

func (c *checkRun) devices(ctx context.Context, hubs map[string]hubRecord) error {
	ids, err := c.names(ctx, "devices")
	if err != nil {
		return err
	}
	found := make([]*deviceRecord, len(ids))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(listConcurrency)
	for i, id := range ids {
		g.Go(func() error {
			var rec deviceRecord
			_, err := c.s.kvRead(gctx, c.s.cfg.WriteTimeout, devicePath(id), &rec)
			if errors.Is(err, store.ErrNotFound) {
				c.halfDeleted(err, id) // or deleted since the LIST
				return nil
			}
			if err != nil {
				return err
			}
			what := fmt.Sprintf("device %q", id)
			if rec.ID != id {
				c.problemf(what, "the record names device %q", rec.ID)
				return nil
			}
			found[i] = &rec
			return c.device(gctx, what, &rec, hubs)
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	c.deviceHub = map[string]string{}
	for _, rec := range found {
		if rec != nil {
			c.deviceHub[rec.ID] = rec.Hub
			c.rep.Devices++
		}
	}
	return nil
}

// device checks one device record against its hub, its marker and its Transit keys.
func (c *checkRun) device(ctx context.Context, what string, rec *deviceRecord, hubs map[string]hubRecord) error {
	hub, hubOK := hubs[rec.Hub]
	if !hubOK {
		c.problemf(what, "its hub %q does not exist", rec.Hub)
	}
	if len(c.marked[rec.Hub][rec.ID]) == 0 {
		c.problemf(what, "hub %q has no marker for it, so deleting the hub would not see it", rec.Hub)
	}
	d := rec.device()
	defer clear(d.Auth.Secret)
	switch {
	case hubOK && hub.keyedInTransit():
		if hasKeyMaterial(&d) {
			c.problemf(what, "its keys are in Transit, yet its record holds key material")
		}
		c.transitNames(what, rec)
	case len(rec.TransitKeys) > 0:
		c.problemf(what, "names %d Transit keys, but hub %q keeps no device keys in Transit", len(rec.TransitKeys), rec.Hub)
	case hubOK && hub.Transit && hasKeyMaterial(&d):
		c.problemf(what, "hub %q keeps its keys in Transit, yet the device's record holds key material", rec.Hub)
	}
	c.mu.Lock()
	for _, k := range rec.TransitKeys {
		c.keys[k] = true
	}
	c.mu.Unlock()
	for _, k := range rec.TransitKeys {
		if err := c.transitKey(ctx, what, k); err != nil {
			return err
		}
	}
	return nil
}

// transitNames reports a device whose TransitKeys lack a primary key of the device or
// a module, or name a key that is not one of theirs.
func (c *checkRun) transitNames(what string, rec *deviceRecord) {
	own := map[string]bool{}
	owners := append([]string{""}, sortedModuleIDs(rec.Modules)...)
	for _, m := range owners {
		own[c.s.deviceKeyName(rec.ID, m, slotPrimary)] = true
		own[c.s.deviceKeyName(rec.ID, m, slotSecondary)] = true
	}
	named := map[string]bool{}
	for _, k := range rec.TransitKeys {
		if !own[k] {
			c.problemf(what, "names Transit key %q, which is not one of its own", k)
		}
		named[k] = true
	}
	for _, m := range owners {
		if !named[c.s.deviceKeyName(rec.ID, m, slotPrimary)] {
			who := "the device"
			if m != "" {
				who = fmt.Sprintf("module %q", m)
			}
			c.problemf(what, "its record names no primary Transit key for %s", who)
		}
	}
}

// markers reads every hub's markers, single and group (groups.go), into c.marked.
func (c *checkRun) markers(ctx context.Context) error {
	folders, err := c.s.kvListFolders(ctx, "hubdevices")
	if err != nil {
		return err
	}
	slices.Sort(folders)
	c.marked = map[string]map[string][]string{}
	for _, f := range folders {
		hub, ok := dec(f)
		if !ok {
			c.problemf("folder hubdevices/"+f, "its name is not one the store writes (lowercase hex)")
			continue
		}
		ids, _, err := c.s.hubMarkers(ctx, hub, func(e string) {
			c.problemf("record hubdevices/"+f+"/"+e, "its name is not one the store writes (lowercase hex, or g and 32 hex digits)")
		})
		if err != nil {
			return err
		}
		c.marked[hub] = ids
	}
	return nil
}

// staleMarkers reports the marker entries, single or in a group, of devices that are
// gone or on another hub.
func (c *checkRun) staleMarkers() {
	for _, hub := range slices.Sorted(maps.Keys(c.marked)) {
		ids := c.marked[hub]
		for _, id := range slices.Sorted(maps.Keys(ids)) {
			if h, ok := c.deviceHub[id]; ok && h == hub {
				continue
			}
			for _, where := range ids[id] {
				detail := fmt.Sprintf("marker on hub %q", hub)
				if where != "" {
					detail = fmt.Sprintf("name in group marker %s on hub %q", where, hub)
				}
				c.leftover(store.LeftoverIndexEntry, id, detail)
			}
		}
	}
}

func (c *checkRun) claims(ctx context.Context) error {
	for _, k := range []struct {
		kind string
		lk   store.LeftoverKind
	}{{"devices", store.LeftoverDeviceClaim}, {"hubs", store.LeftoverHubClaim}} {
		kind, lk := k.kind, k.lk
		names, err := c.names(ctx, "claims/"+kind)
		if err != nil {
			return err
		}
		for _, name := range names {
			var rec claimRecord
			if _, err := c.s.kvRead(ctx, c.s.cfg.WriteTimeout, claimPath(kind, name), &rec); errors.Is(err, errHalfDeleted) {
				c.leftover(lk, name, "release interrupted, metadata without data: the next create or delete takes it over")
				continue
			} else if errors.Is(err, store.ErrNotFound) {
				continue // released since the LIST
			} else if err != nil {
				return err
			}
			state := "held"
			if c.s.now().Sub(rec.ClaimedAt) >= claimTTL {
				state = "stale: the next create or delete takes it over"
			}
			c.leftover(lk, name, fmt.Sprintf("%s since %s, %s", rec.Op, rec.ClaimedAt.Format(time.RFC3339), state))
		}
	}
	return nil
}

// orphanKeys reports Transit keys under the store's names that no record refers to.
func (c *checkRun) orphanKeys(ctx context.Context) error {
	path := c.s.cfg.TransitMount + "/keys/"
	keys, err := c.s.list(ctx, path)
	switch {
	case errors.Is(err, ErrPermissionDenied):
		c.rep.Unchecked = append(c.rep.Unchecked, "Transit keys no record refers to: the token may not LIST "+path)
		return nil
	case err != nil:
		return err
	}
	ours := regexp.MustCompile(`^` + regexp.QuoteMeta(c.s.keyPrefix) + `-(h-[0-9a-f]{32}|d-[0-9a-f]{32}-(` + slotPrimary + `|` + slotSecondary + `))$`)
	slices.Sort(keys)
	for _, k := range keys {
		if ours.MatchString(k) && !c.keys[k] {
			what := "a hub's"
			if strings.HasPrefix(k, c.s.keyPrefix+"-d-") {
				what = "a device's or module's"
			}
			c.leftover(store.LeftoverKey, k, what+" Transit key, left by an interrupted create or delete")
		}
	}
	return nil
}
