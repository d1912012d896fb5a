package vaultstore

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strings"
	"time"

	"github.com/tokensvc/tokensvc/internal/coalesce"
	"github.com/tokensvc/tokensvc/internal/domain"
	"github.com/tokensvc/tokensvc/internal/store"
)

// Transit batching. Concurrent HMACs with the same Transit key (every device of a hub
// signing with its policy key, or one device's burst) and concurrent signatures with
// the same issuer key are coalesced (internal/coalesce) into Transit's batch form, a
// batch_input array on the same endpoint: one Vault call, one key lookup and one audit
// entry for up to TransitBatchMax items. A key with nothing in flight sends its item
// at once, in the single-item form, exactly as without batching.
//
// The batch is one Vault call: RequestTimeout bounds it from the moment it is sent, and
// an error of the call (Vault unreachable, sealed, the key gone, a 403) fails every item
// of it, classified as a single call's is; when two batches in a row find Vault
// unavailable, the items queued behind them fail too rather than wait for calls of
// their own. Transit answers each item on its own, so an
// item Transit refuses fails only its own caller, with the error a single call would
// have given. A caller whose context ends returns at once; its batch goes on for the
// others, under a context of the store's (ended by Close) rather than any caller's.

// DefaultTransitBatchMax is the batch size tokensvc's flags default to.
const DefaultTransitBatchMax = 64

// DefaultTransitBatchWait is the longest tokensvc's flags let a follow-up batch wait to
// hold as many items as the call before it (a key with nothing in flight never waits).
// Measured on one policy hub, 32 workers, same script, three alternating runs
// (BENCHMARKS §20.1): 1.40–1.50× raw transit/hmac throughput at 0.18–0.20× its Vault
// CPU per token; with no wait 1.31–1.46× at 0.23–0.26×.
const DefaultTransitBatchWait = time.Millisecond

// MaxTransitBatch caps TransitBatchMax: a batch answer holds about 60 bytes per item,
// and one call must stay well within RequestTimeout on a loaded Vault.
const MaxTransitBatch = 1024

// transitBatchers are the store's two coalescers; nil when batching is off.
type transitBatchers struct {
	hmac *coalesce.Batcher[string, []byte] // key: Transit key name; item: base64 input
	sign *coalesce.Batcher[string, []byte] // key: alg + "/" + Transit key name; item: base64 digest
}

func (s *Store) startBatchers() {
	// Every caller of one hub's read after a write shares it, however many there are.
	s.hubs.reads = coalesce.New(s.readHubFor, coalesce.Options{Max: math.MaxInt, Linger: groupLinger})
	// The marker writes of one hub's creates (groups.go).
	s.groups.mark = coalesce.New(s.markCall, coalesce.Options{Max: maxGroup, Linger: groupLinger})
	s.groups.unmark = coalesce.New(s.unmarkCall, coalesce.Options{Max: math.MaxInt})
	if s.cfg.TransitBatchMax <= 1 {
		return
	}
	o := coalesce.Options{Max: s.cfg.TransitBatchMax, Linger: s.cfg.TransitBatchWait,
		// Two batches in a row that found Vault unavailable (timed out, sealed,
		// unreachable) fail the backlog behind them too: each request waits for at
		// most two failed calls, not for one per batch of the backlog, and one slow
		// call alone fails only its own batch.
		FailQueued: func(err error) bool { return errors.Is(err, store.ErrUnavailable) }}
	s.batch.hmac = coalesce.New(s.hmacCall, o)
	s.batch.sign = coalesce.New(s.signCall, o)
}

func (s *Store) closeBatchers() {
	s.hubs.reads.Close()
	s.groups.mark.Close()
	s.groups.unmark.Close()
	if s.batch.hmac != nil {
		s.batch.hmac.Close()
		s.batch.sign.Close()
	}
}

// do runs one item through b, or straight as a call of its own when batching is off.
func do(ctx context.Context, b *coalesce.Batcher[string, []byte], call coalesce.Func[string, []byte], key, in string) ([]byte, error) {
	if b != nil {
		return b.Do(ctx, key, in)
	}
	rs, err := call(ctx, key, []string{in})
	if err != nil {
		return nil, err
	}
	return rs[0].Val, rs[0].Err
}

// batchResult is one entry of a Transit batch_results array.
type batchResult struct {
	HMAC      string `json:"hmac"`
	Signature string `json:"signature"`
	Error     string `json:"error"`
}

// transitCall sends fields plus the items' inputs to path: alone in the single-item form,
// several as batch_input. It returns one answer per item (an item Transit refused has
// its Error set) or the call's raw error, for the caller to classify.
func (s *Store) transitCall(ctx context.Context, path, fields string, in []string) ([]batchResult, error) {
	n := len(fields) + len(`{"batch_input":[]}`)
	for _, v := range in {
		n += len(`{"input":""},`) + len(v)
	}
	body := make([]byte, 0, n)
	body = append(body, '{')
	if len(in) == 1 {
		body = append(body, `"input":"`...)
		body = append(body, in[0]...)
		body = append(body, '"')
	} else {
		body = append(body, `"batch_input":[`...)
		for i, v := range in {
			if i > 0 {
				body = append(body, ',')
			}
			body = append(body, `{"input":"`...)
			body = append(body, v...)
			body = append(body, `"}`...)
		}
		body = append(body, ']')
	}
	body = append(body, fields...)
	body = append(body, '}')

	var r struct {
		Data struct {
			batchResult
			BatchResults []batchResult `json:"batch_results"`
		} `json:"data"`
	}
	if err := s.put(ctx, s.cfg.RequestTimeout, path, body, &r); err != nil {
		return nil, err
	}
	if len(in) == 1 {
		return []batchResult{r.Data.batchResult}, nil
	}
	if len(r.Data.BatchResults) != len(in) {
		return nil, fmt.Errorf("%s answered %d results for %d items", path, len(r.Data.BatchResults), len(in))
	}
	return r.Data.BatchResults, nil
}

// itemResults turns Transit's answers to path into the items' results: parse reads an
// answer, and an item Transit refused gets itemError.
func itemResults(path string, rs []batchResult, parse func(batchResult) ([]byte, error)) []coalesce.Result[[]byte] {
	out := make([]coalesce.Result[[]byte], len(rs))
	for i, r := range rs {
		if r.Error != "" {
			out[i].Err = itemError(path, r.Error)
			continue
		}
		out[i].Val, out[i].Err = parse(r)
	}
	return out
}

// itemError maps an item Transit refused as a single call's 400 with that message
// would be (Vault's item messages hold no input or key material).
func itemError(path, msg string) error {
	if strings.Contains(msg, "not found") {
		return fmt.Errorf("vault refused write of %s: %s: %w", path, msg, store.ErrNotFound)
	}
	return fmt.Errorf("vault refused write of %s (%d): %s", path, http.StatusBadRequest, msg)
}

// hmacCall computes the HMACs of inputs (base64) with Transit key name in one call
// (a coalesce.Func).
func (s *Store) hmacCall(ctx context.Context, name string, inputs []string) ([]coalesce.Result[[]byte], error) {
	path := s.cfg.TransitMount + "/hmac/" + name + "/sha2-256"
	rs, err := s.transitCall(ctx, path, "", inputs)
	if err != nil {
		if vaultSays(err, http.StatusBadRequest, "key not found") {
			return nil, fmt.Errorf("key %s: %w", name, store.ErrNotFound)
		}
		return nil, s.classify(ctx, err, "write", path)
	}
	return itemResults(path, rs, func(r batchResult) ([]byte, error) { return parseHMAC(r.HMAC) }), nil
}

// errAnswerFormat is a Transit answer this store cannot read.
var errAnswerFormat = errors.New("unexpected answer format")

// parseHMAC reads Transit's "vault:v<version>:<base64>" HMAC.
func parseHMAC(s string) ([]byte, error) {
	rest, ok := strings.CutPrefix(s, "vault:v")
	if ok {
		_, rest, ok = strings.Cut(rest, ":")
	}
	if !ok {
		return nil, errAnswerFormat
	}
	mac, err := base64.StdEncoding.DecodeString(rest)
	if err != nil || len(mac) != sha256.Size {
		return nil, errAnswerFormat
	}
	return mac, nil
}

// signKey is the sign batcher's key: signatures share a call when they share the key
// and the algorithm (which sets the call's signature_algorithm).
func signKey(name string, alg domain.IssuerAlg) string { return string(alg) + "/" + name }

// signCall signs digests (base64) with version 1 of the Transit key and algorithm key
// names (see signKey) in one call (a coalesce.Func).
func (s *Store) signCall(ctx context.Context, key string, digests []string) ([]coalesce.Result[[]byte], error) {
	a, name, _ := strings.Cut(key, "/")
	alg := domain.IssuerAlg(a)
	fields := `,"prehashed":true,"key_version":1,"marshaling_algorithm":"jws"`
	if alg == domain.AlgRS256 {
		fields += `,"signature_algorithm":"pkcs1v15"`
	}
	path := s.cfg.TransitMount + "/sign/" + name + "/sha2-256"
	rs, err := s.transitCall(ctx, path, fields, digests)
	if err != nil {
		if vaultSays(err, http.StatusBadRequest, "not found") {
			return nil, store.ErrNotFound
		}
		return nil, s.classify(ctx, err, "write", path)
	}
	return itemResults(path, rs, func(r batchResult) ([]byte, error) { return parseSignature(r.Signature, alg) }), nil
}

// parseSignature reads Transit's "vault:v1:<base64url>" signature (JWS marshaling
// encodes every key type so).
func parseSignature(s string, alg domain.IssuerAlg) ([]byte, error) {
	rest, ok := strings.CutPrefix(s, "vault:v1:")
	if !ok {
		return nil, errAnswerFormat
	}
	sig, err := base64.RawURLEncoding.DecodeString(rest)
	if err != nil || (alg == domain.AlgES256 && len(sig) != 64) || (alg == domain.AlgRS256 && len(sig) < 256) {
		return nil, errAnswerFormat
	}
	return sig, nil
}
