package vaultstore

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	vault "github.com/hashicorp/vault/api"

	"github.com/tokensvc/tokensvc/internal/store"
)

// The Vault calls every operation is built from: raw reads and writes bounded by the
// store's timeouts, the KV v2 record primitives on top of them, and the mapping of
// Vault's answers to the store's errors.

// errCASMismatch is what a check-and-set write that lost its race returns; callers turn
// it into store.ErrExists or a retry.
var errCASMismatch = errors.New("check-and-set version mismatch")

// errHalfDeleted is what reading a KV v2 record gives when its metadata outlived its
// version data. KV v2 deletes a record's versions before its metadata, one storage
// call at a time, and gives up part way when the request is cancelled; a tokensvc
// killed while deleting a record can leave that state, which Vault then answers with
// a 500 ("could not find version data") on every read. The delete had begun, so the
// record reads as absent (kvRead) and a create takes it over (takeOver).
var errHalfDeleted = errors.New("the record's metadata outlived its data (a delete was interrupted)")

// classify maps an error from a Vault call to the store's vocabulary. It never
// includes request bodies: paths carry only hex names and Transit key names.
func (s *Store) classify(ctx context.Context, err error, verb, path string) error {
	var re *vault.ResponseError
	if errors.As(err, &re) {
		switch {
		case re.StatusCode == http.StatusNotFound:
			return store.ErrNotFound
		case re.StatusCode == http.StatusForbidden && s.authState != nil && s.authState() != nil:
			// Not logged in: the token is gone until the next login (see WithAuthState).
			return fmt.Errorf("vault denied %s of %s while the store is not logged in (%v): %w", verb, path, s.authState(), store.ErrUnavailable)
		case re.StatusCode == http.StatusForbidden:
			return fmt.Errorf("vault denied %s of %s: check the tokensvc policy (or whether its token expired): %w", verb, path, ErrPermissionDenied)
		case re.StatusCode == http.StatusInternalServerError && vaultSays(err, 0, "could not find version data"):
			return fmt.Errorf("%s of %s: %w", verb, path, errHalfDeleted)
		case re.StatusCode == http.StatusTooManyRequests || re.StatusCode >= 500:
			// Sealed, standby without forwarding, overloaded, rate limited or broken:
			// all of them may pass, so the caller may retry later.
			return fmt.Errorf("vault answered %d to %s of %s: %w", re.StatusCode, verb, path, store.ErrUnavailable)
		default:
			return fmt.Errorf("vault refused %s of %s (%d): %s", verb, path, re.StatusCode, strings.Join(re.Errors, "; "))
		}
	}
	if errors.Is(err, context.Canceled) && ctx.Err() != nil && !errors.Is(context.Cause(ctx), context.DeadlineExceeded) {
		// The caller gave up; that says nothing about Vault.
		return fmt.Errorf("%s %s: %w", verb, path, context.Canceled)
	}
	// Connection refused or reset, DNS, TLS, timeouts and our own deadline: Vault could
	// not be reached in time. The underlying error holds only the URL, never a body.
	return fmt.Errorf("vault %s of %s: %v: %w", verb, path, err, store.ErrUnavailable)
}

// vaultSays reports whether err is a Vault response with the given status whose
// messages contain substr; some Transit outcomes are told apart only by their text.
func vaultSays(err error, status int, substr string) bool {
	var re *vault.ResponseError
	if !errors.As(err, &re) || (status != 0 && re.StatusCode != status) {
		return false
	}
	for _, m := range re.Errors {
		if strings.Contains(m, substr) {
			return true
		}
	}
	return false
}

func closeResponse(resp *vault.Response) {
	if resp != nil && resp.Body != nil {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
		resp.Body.Close()
	}
}

// get performs a GET of path (with query values) under timeout and decodes the JSON
// body into out. A 404 comes back as store.ErrNotFound.
func (s *Store) get(ctx context.Context, timeout time.Duration, path string, query map[string][]string, out any) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	verb := "read"
	if query["list"] != nil {
		verb = "list"
	}
	resp, err := s.c.Logical().ReadRawWithDataWithContext(ctx, path, query)
	defer closeResponse(resp)
	if err != nil {
		return s.classify(ctx, err, verb, path)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return s.classify(ctx, err, verb, path)
	}
	if err := json.Unmarshal(body, out); err != nil {
		return fmt.Errorf("decode vault response to %s of %s: %v", verb, path, err)
	}
	return nil
}

// put performs a PUT of the JSON body to path under timeout, decoding the response
// into out when out is not nil and the response has a body.
func (s *Store) put(ctx context.Context, timeout time.Duration, path string, body []byte, out any) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	resp, err := s.c.Logical().WriteRawWithContext(ctx, path, body)
	defer closeResponse(resp)
	if err != nil {
		return err // raw: callers look at some Vault messages before classifying
	}
	if out == nil || resp.StatusCode == http.StatusNoContent {
		return nil
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("decode vault response to write of %s: %v", path, err)
	}
	return nil
}

// del performs a DELETE of path under WriteTimeout; a missing path is not an error.
func (s *Store) del(ctx context.Context, path string) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.WriteTimeout)
	defer cancel()
	_, err := s.c.Logical().DeleteWithContext(ctx, path)
	if err != nil {
		if c := s.classify(ctx, err, "delete", path); !errors.Is(c, store.ErrNotFound) {
			return c
		}
	}
	return nil
}

// kvRead reads the record at rel (relative to the prefix) into out and returns its
// version; store.ErrNotFound when there is none, also wrapping errHalfDeleted when
// only its metadata is left.
func (s *Store) kvRead(ctx context.Context, timeout time.Duration, rel string, out any) (int, error) {
	return s.kvReadVersion(ctx, timeout, rel, 0, out)
}

// kvReadVersion is kvRead of one version of the record (0: the latest).
func (s *Store) kvReadVersion(ctx context.Context, timeout time.Duration, rel string, version int, out any) (int, error) {
	var r struct {
		Data *struct {
			Data     json.RawMessage `json:"data"`
			Metadata struct {
				Version int `json:"version"`
			} `json:"metadata"`
		} `json:"data"`
	}
	path := s.kvData + "/" + rel
	var query map[string][]string
	if version > 0 {
		query = map[string][]string{"version": {strconv.Itoa(version)}}
	}
	if err := s.get(ctx, timeout, path, query, &r); errors.Is(err, errHalfDeleted) {
		return 0, fmt.Errorf("%w: %w", store.ErrNotFound, err)
	} else if err != nil {
		return 0, err
	}
	// A soft-deleted or destroyed latest version reads as data null.
	if r.Data == nil || len(r.Data.Data) == 0 || bytes.Equal(r.Data.Data, []byte("null")) {
		return 0, store.ErrNotFound
	}
	if err := json.Unmarshal(r.Data.Data, out); err != nil {
		return 0, fmt.Errorf("decode record %s: %v", path, err)
	}
	return r.Data.Metadata.Version, nil
}

// noCAS makes kvWrite overwrite unconditionally.
const noCAS = -1

// kvWrite stores v at rel. With cas >= 0 the write succeeds only if the record's
// current version is cas (0: it must not exist, or be left half-deleted), else
// errCASMismatch. It returns the new version.
func (s *Store) kvWrite(ctx context.Context, rel string, cas int, v any) (int, error) {
	ver, err := s.kvWriteOnce(ctx, rel, cas, v)
	if cas != 0 || !errors.Is(err, errCASMismatch) {
		return ver, err
	}
	return s.takeOver(ctx, rel, v)
}

func (s *Store) kvWriteOnce(ctx context.Context, rel string, cas int, v any) (int, error) {
	type casOptions struct {
		CAS int `json:"cas"`
	}
	req := struct {
		Options *casOptions `json:"options,omitempty"`
		Data    any         `json:"data"`
	}{Data: v}
	if cas >= 0 {
		req.Options = &casOptions{CAS: cas}
	}
	body, err := json.Marshal(req)
	if err != nil {
		return 0, fmt.Errorf("encode record: %w", err)
	}
	var r struct {
		Data struct {
			Version int `json:"version"`
		} `json:"data"`
	}
	path := s.kvData + "/" + rel
	err = s.put(ctx, s.cfg.WriteTimeout, path, body, &r)
	clear(body) // it may hold an HS256 secret or, in KV mode, device keys
	if err != nil {
		if vaultSays(err, http.StatusBadRequest, "check-and-set parameter did not match") {
			return 0, errCASMismatch
		}
		return 0, s.classify(ctx, err, "write", path)
	}
	return r.Data.Version, nil
}

// kvDelete removes every version and the metadata of rel; a missing record is fine.
func (s *Store) kvDelete(ctx context.Context, rel string) error {
	return s.del(ctx, s.kvMeta+"/"+rel)
}

// kvDestroyVersion permanently erases one old version of rel, e.g. one that held a key
// since replaced.
func (s *Store) kvDestroyVersion(ctx context.Context, rel string, version int) error {
	body := fmt.Appendf(nil, `{"versions":[%d]}`, version)
	path := s.kvDestroy + "/" + rel
	if err := s.put(ctx, s.cfg.WriteTimeout, path, body, nil); err != nil {
		return s.classify(ctx, err, "destroy", path)
	}
	return nil
}

// list returns what a LIST of path gives, sub-folders with their trailing slash; a
// missing or empty folder gives none.
func (s *Store) list(ctx context.Context, path string) ([]string, error) {
	var r struct {
		Data struct {
			Keys []string `json:"keys"`
		} `json:"data"`
	}
	err := s.get(ctx, s.cfg.ListTimeout, path, map[string][]string{"list": {"true"}}, &r)
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return r.Data.Keys, nil
}

// kvList returns the names directly under folder rel (sub-folders excluded), unsorted;
// an empty or missing folder gives none.
func (s *Store) kvList(ctx context.Context, rel string) ([]string, error) {
	keys, err := s.list(ctx, s.kvMeta+"/"+rel+"/")
	if err != nil {
		return nil, err
	}
	return slices.DeleteFunc(keys, func(k string) bool { return strings.HasSuffix(k, "/") }), nil
}

// kvListFolders returns the sub-folders directly under folder rel, without their
// trailing slash, unsorted.
func (s *Store) kvListFolders(ctx context.Context, rel string) ([]string, error) {
	keys, err := s.list(ctx, s.kvMeta+"/"+rel+"/")
	if err != nil {
		return nil, err
	}
	folders := keys[:0]
	for _, k := range keys {
		if f, ok := strings.CutSuffix(k, "/"); ok {
			folders = append(folders, f)
		}
	}
	return folders, nil
}
