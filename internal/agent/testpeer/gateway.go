package testpeer

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/tokensvc/tokensvc/internal/agent/credential"
	"github.com/tokensvc/tokensvc/internal/agent/fetch"
	"github.com/tokensvc/tokensvc/internal/domain"
	"github.com/tokensvc/tokensvc/internal/oapi"
	"github.com/tokensvc/tokensvc/internal/signer"
)

// GatewayFixture is a Fixture whose device is a gateway with leaves.
type GatewayFixture struct {
	*Fixture
	// Leaves are the leaf IDs in creation order; LeafKeys their decoded SAS keys,
	// which only the hub peers know.
	Leaves   []string
	LeafKeys map[string][]byte
}

// NewGatewayFixture starts the service with gatewayID (a gateway) and its leaves, whose
// tokens live ttl.
func NewGatewayFixture(tb testing.TB, gatewayID string, leaves []string, ttl time.Duration) *GatewayFixture {
	tb.Helper()
	f := NewFixture(tb, gatewayID, ttl, domain.Hub{})
	yes := true
	resp, err := f.Service.Admin.UpdateDeviceWithResponse(context.Background(), gatewayID, oapi.DevicePatch{Gateway: &yes})
	if err != nil || resp.StatusCode() != http.StatusOK {
		tb.Fatalf("make %s a gateway: %v %v", gatewayID, err, resp.StatusCode())
	}
	g := &GatewayFixture{Fixture: f, Leaves: leaves, LeafKeys: map[string][]byte{}}
	for _, id := range leaves {
		parent := gatewayID
		created := f.Service.CreateDevice(oapi.DeviceCreate{DeviceId: id, Hub: "main", Parent: &parent,
			Auth: oapi.CredentialCreate{Type: oapi.Hs256}})
		key, err := signer.DecodeKey(*created.PrimaryKey, signer.KeyBase64)
		if err != nil {
			tb.Fatal(err)
		}
		g.LeafKeys[id] = key
	}
	return g
}

// StartAMQP starts the AMQP hub peer for Hub with a certificate from the fixture's
// CA; it knows the leaves' keys.
func (g *GatewayFixture) StartAMQP(tb testing.TB) *AMQPPeer {
	tb.Helper()
	return StartAMQP(tb, AMQPOptions{Hub: Hub, HubName: HubName, Cert: g.CA.Issue(tb, Hub), Keys: g.LeafKeys})
}

// LeafTokens fetches the tokens of the leaves ids, in that order, in one POST
// /token/batch as the gateway; a failed call or entry fails the test.
func (g *GatewayFixture) LeafTokens(tb testing.TB, ids ...string) []fetch.BatchResult {
	tb.Helper()
	results, err := g.Fetcher(tb).Batch(context.Background(), ids)
	if err != nil {
		tb.Fatalf("batch: %v", err)
	}
	for _, r := range results {
		if r.Err != nil {
			tb.Fatalf("batch: %s: %v", r.DeviceID, r.Err)
		}
	}
	return results
}

// Fetcher returns the device's (the gateway's) fetch client, with its own credential,
// for the service.
func (f *Fixture) Fetcher(tb testing.TB) *fetch.Client {
	tb.Helper()
	return f.fetcher(tb, "", 10*time.Second)
}

// fetcher is the device's fetch client asking for tokens for transport ("": the
// default), each exchange bounded by timeout.
func (f *Fixture) fetcher(tb testing.TB, transport string, timeout time.Duration) *fetch.Client {
	tb.Helper()
	cred, err := credential.Load(f.SecretFile, credential.HS256)
	if err != nil {
		tb.Fatal(err)
	}
	hc := &http.Client{Timeout: timeout, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: f.CA.Pool()}}}
	fc, err := fetch.New(fetch.Options{ServiceURL: f.Service.URL, HTTPClient: hc, DeviceID: f.DeviceID,
		Audience: Audience, Transport: transport, Signer: cred, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		tb.Fatal(err)
	}
	return fc
}

// Proxy forwards TCP connections to a target and can be switched off (connections
// refused at once, open ones cut) and on again: an upstream outage on demand.
type Proxy struct {
	// Addr is where it listens.
	Addr   string
	target string
	ln     net.Listener

	mu    sync.Mutex
	down  bool
	conns map[net.Conn]struct{}
}

// StartProxy starts a proxy to target on loopback; it stops when the test ends.
func StartProxy(tb testing.TB, target string) *Proxy {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	p := &Proxy{Addr: ln.Addr().String(), target: target, ln: ln, conns: map[net.Conn]struct{}{}}
	go p.serve()
	tb.Cleanup(func() {
		ln.Close()
		p.SetDown(true)
	})
	return p
}

// SetDown cuts every open connection and refuses new ones (true), or forwards again.
func (p *Proxy) SetDown(down bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = down
	if down {
		for c := range p.conns {
			c.Close()
		}
		clear(p.conns)
	}
}

func (p *Proxy) track(cs ...net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.down {
		return false
	}
	for _, c := range cs {
		p.conns[c] = struct{}{}
	}
	return true
}

func (p *Proxy) serve() {
	for {
		c, err := p.ln.Accept()
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil {
			continue
		}
		up, err := net.Dial("tcp", p.target)
		if err != nil || !p.track(c, up) {
			c.Close()
			if up != nil {
				up.Close()
			}
			continue
		}
		go func() { _, _ = io.Copy(up, c); up.Close() }()
		go func() { _, _ = io.Copy(c, up); c.Close() }()
	}
}
