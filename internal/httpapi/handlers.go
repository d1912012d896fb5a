package httpapi

import (
	"context"
	"fmt"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/tokensvc/tokensvc/internal/deviceauth"
	"github.com/tokensvc/tokensvc/internal/domain"
	"github.com/tokensvc/tokensvc/internal/oapi"
	"github.com/tokensvc/tokensvc/internal/oapi/oapiserver"
	"github.com/tokensvc/tokensvc/internal/registry"
	"github.com/tokensvc/tokensvc/internal/signer"
	"github.com/tokensvc/tokensvc/internal/store"
	"github.com/tokensvc/tokensvc/internal/tokens"
)

var noStore = "no-store"

// jsonContentType and noStoreValue are the token response's header values.
var (
	jsonContentType = []string{"application/json"}
	noStoreValue    = []string{noStore}
)

// GetToken mints a token for the device the assertion proved or, for a gateway that
// names one with device=, for its child (gateway.go).
func (s *Server) GetToken(ctx context.Context, req oapiserver.GetTokenRequestObject) (oapiserver.GetTokenResponseObject, error) {
	rt := routedOf(ctx)
	if rt == nil || rt.device.ID == "" {
		return nil, fmt.Errorf("GetToken reached without an authenticated device")
	}
	tr := tokens.Request{
		ModuleID:  deref(req.Params.Module),
		TTL:       durationOf(req.Params.Ttl),
		Transport: signer.Transport(deref(req.Params.Transport)),
	}
	var issued tokens.Issued
	var err error
	if id := deref(req.Params.Device); id != "" && id != rt.device.ID {
		issued, err = s.issueChild(ctx, rt.device, id, tr)
	} else {
		// device= naming the caller itself is an ordinary request for its own token.
		issued, err = s.issuer.issueFor(ctx, "", rt.device, tr)
	}
	if err != nil {
		return nil, err
	}
	body := tokenToAPI(issued)
	if prefersText(rt.accept) {
		return tokenText{body}, nil
	}
	return tokenJSON{body}, nil
}

// prefersText reports whether the client ranks text/plain above JSON (RFC 9110 q-values;
// equal ranks go to JSON, the documented default).
func prefersText(accept string) bool {
	textQ, jsonQ := -1.0, -1.0
	for part := range strings.SplitSeq(accept, ",") {
		mt, params, err := mime.ParseMediaType(strings.TrimSpace(part))
		if err != nil {
			continue
		}
		q := 1.0
		if v, ok := params["q"]; ok {
			if q, err = strconv.ParseFloat(v, 64); err != nil || q < 0 || q > 1 {
				continue
			}
		}
		switch mt {
		case "text/plain":
			textQ = max(textQ, q)
		case "application/json", "*/*", "application/*":
			jsonQ = max(jsonQ, q)
		}
	}
	return textQ > 0 && textQ > jsonQ
}

// tokenJSON writes the token response without HTML escaping, so the & and = of SAS
// tokens reach small JSON parsers as themselves.
type tokenJSON struct{ body oapi.TokenResponse }

func (t tokenJSON) VisitGetTokenResponse(w http.ResponseWriter) error {
	bp := tokenBufs.Get().(*[]byte)
	defer tokenBufs.Put(bp)
	*bp = appendTokenResponse((*bp)[:0], &t.body)
	h := w.Header()
	// Shared values instead of Set's fresh one-element slice each: nothing after this
	// point modifies a header value in place (net/http only reads them).
	h["Content-Type"], h["Cache-Control"] = jsonContentType, noStoreValue
	// A known length: net/http need not switch to chunked encoding for a body larger
	// than its 2 KiB buffer.
	h.Set("Content-Length", strconv.Itoa(len(*bp)))
	w.WriteHeader(http.StatusOK)
	_, err := w.Write(*bp)
	return err
}

// tokenText is the compact key=value form for microcontrollers: one field a line, no
// quoting, times as Unix seconds so a device without a clock can use them.
type tokenText struct{ body oapi.TokenResponse }

func (t tokenText) VisitGetTokenResponse(w http.ResponseWriter) error {
	b := t.body
	var tl textLines
	tl.times(b.ExpiresIn, b.RefreshAfter, b.ExpiresAt, b.ServerTime, "token", b.Token)
	tl.profiles(b.Mqtt, b.Amqp, b.Https, b.Token)
	if b.Signature != nil {
		tl.line("signature", *b.Signature)
	}
	return tl.write(w)
}

// textLines builds the key=value text forms: one field a line, no quoting, empty
// values left out.
type textLines struct{ sb strings.Builder }

func (t *textLines) line(k, v string) {
	if v != "" {
		t.sb.WriteString(k)
		t.sb.WriteByte('=')
		t.sb.WriteString(v)
		t.sb.WriteByte('\n')
	}
}

// times writes the credential (k=v) and its times, as Unix seconds so a device
// without a clock can use them.
func (t *textLines) times(expiresIn int, refreshAfter, expiresAt, serverTime time.Time, k, v string) {
	unix := func(t time.Time) string { return strconv.FormatInt(t.Unix(), 10) }
	t.line(k, v)
	t.line("expiresIn", strconv.Itoa(expiresIn))
	t.line("refreshIn", strconv.FormatInt(int64(refreshAfter.Sub(serverTime)/time.Second), 10))
	t.line("expiresAt", unix(expiresAt))
	t.line("serverTime", unix(serverTime))
}

// write sends the lines as the 200 response.
func (t *textLines) write(w http.ResponseWriter) error {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", noStore)
	w.WriteHeader(http.StatusOK)
	_, err := w.Write([]byte(t.sb.String()))
	return err
}

// profiles writes the connection profiles' lines (GET /token and POST
// /token/certificate share them); token is the credential the profiles carry, "" for
// a certificate.
func (t *textLines) profiles(m *oapi.MqttProfile, a *oapi.AmqpProfile, h *oapi.HttpsProfile, token string) {
	line := t.line
	if m != nil {
		line("mqttHost", m.Host)
		line("mqttPort", strconv.Itoa(m.Port))
		line("mqttUrl", m.Url)
		line("mqttClientId", m.ClientId)
		line("mqttUsername", m.Username)
		if m.Password != token {
			// Said only where it is not the token (the SAS kinds' password): an AWS
			// IoT custom authorizer with signing takes the token in the user name and
			// an empty password.
			t.sb.WriteString("mqttPassword=" + m.Password + "\n")
		}
		if m.Alpn != nil {
			line("mqttAlpn", strings.Join(*m.Alpn, ","))
		}
		if m.ProtocolVersion != "3.1.1" {
			line("mqttVersion", m.ProtocolVersion)
		}
		if m.AuthMethod != nil {
			line("mqttAuthMethod", *m.AuthMethod)
		}
		line("mqttPublish", m.Topics.Publish)
		if len(m.Topics.Subscribe) > 0 {
			line("mqttSubscribe", m.Topics.Subscribe[0])
		}
	}
	if a != nil {
		line("amqpHost", a.Host)
		line("amqpPort", strconv.Itoa(a.Port))
		if a.Transport == oapi.AmqpProfileTransport(signer.WebSocket) {
			line("amqpUrl", a.Url) // the TCP form embeds the token a second time
		}
		line("amqpUsername", deref(a.Username))
		line("amqpAddress", a.Address)
	}
	if h != nil {
		line("httpsUrl", h.Url)
		if h.Alpn != nil {
			line("httpsAlpn", strings.Join(*h.Alpn, ","))
		}
	}
}

// CreateHub registers a hub.
func (s *Server) CreateHub(ctx context.Context, req oapiserver.CreateHubRequestObject) (oapiserver.CreateHubResponseObject, error) {
	h, err := s.deps.Registry.CreateHub(ctx, hubFromAPI(*req.Body))
	if err != nil {
		return nil, err
	}
	s.log.InfoContext(ctx, "hub created", "hub", h.Name, "kind", h.Kind, "mode", h.Mode)
	return oapiserver.CreateHub201JSONResponse(hubToAPI(h)), nil
}

// ListHubs lists hubs.
func (s *Server) ListHubs(ctx context.Context, _ oapiserver.ListHubsRequestObject) (oapiserver.ListHubsResponseObject, error) {
	hubs, err := s.deps.Registry.ListHubs(ctx)
	if err != nil {
		return nil, err
	}
	out := oapiserver.ListHubs200JSONResponse{Items: make([]oapi.Hub, len(hubs))}
	for i, h := range hubs {
		out.Items[i] = hubToAPI(h)
	}
	return out, nil
}

// GetHub returns one hub.
func (s *Server) GetHub(ctx context.Context, req oapiserver.GetHubRequestObject) (oapiserver.GetHubResponseObject, error) {
	h, err := s.deps.Registry.GetHub(ctx, req.Name)
	if err != nil {
		return nil, err
	}
	return oapiserver.GetHub200JSONResponse(hubToAPI(h)), nil
}

// DeleteHub deletes a hub no device uses.
func (s *Server) DeleteHub(ctx context.Context, req oapiserver.DeleteHubRequestObject) (oapiserver.DeleteHubResponseObject, error) {
	if err := s.deps.Registry.DeleteHub(ctx, req.Name); err != nil {
		return nil, err
	}
	s.log.InfoContext(ctx, "hub deleted", "hub", req.Name)
	return oapiserver.DeleteHub204Response{}, nil
}

// CreateDevice registers a device and returns its secrets once.
func (s *Server) CreateDevice(ctx context.Context, req oapiserver.CreateDeviceRequestObject) (oapiserver.CreateDeviceResponseObject, error) {
	c, err := s.deps.Registry.CreateDevice(ctx, deviceFromAPI(*req.Body))
	if err != nil {
		return nil, err
	}
	d := c.Device
	s.log.InfoContext(ctx, "device created", "device", d.ID, "hub", d.Hub, "auth", d.Auth.Type, "gateway", d.Gateway, "parent", d.Parent)
	out := oapiserver.CreateDevice201JSONResponse{
		Headers: oapiserver.CreateDevice201ResponseHeaders{CacheControl: &noStore},
	}
	out.Body.Device = deviceToAPI(d)
	out.Body.PrimaryKey = ptrIfSet(d.PrimaryKey)
	out.Body.SecondaryKey = ptrIfSet(d.SecondaryKey)
	out.Body.Auth.Type = oapi.CredentialType(d.Auth.Type)
	out.Body.Auth.Secret = ptrIfSet(c.Secret)
	out.Body.Modules = make([]struct {
		ModuleId     string `json:"moduleId"`
		PrimaryKey   string `json:"primaryKey"`
		SecondaryKey string `json:"secondaryKey"`
	}, len(d.Modules))
	for i, m := range d.Modules {
		out.Body.Modules[i].ModuleId = m.ID
		out.Body.Modules[i].PrimaryKey = m.PrimaryKey
		out.Body.Modules[i].SecondaryKey = m.SecondaryKey
	}
	return out, nil
}

// GetDevice returns a device without secrets.
func (s *Server) GetDevice(ctx context.Context, req oapiserver.GetDeviceRequestObject) (oapiserver.GetDeviceResponseObject, error) {
	if err := checkDeviceID(req.DeviceId); err != nil {
		return nil, err
	}
	d, err := s.deps.Registry.GetDevice(ctx, req.DeviceId)
	if err != nil {
		return nil, err
	}
	return oapiserver.GetDevice200JSONResponse(deviceToAPI(d)), nil
}

// ListDevices pages through devices.
func (s *Server) ListDevices(ctx context.Context, req oapiserver.ListDevicesRequestObject) (oapiserver.ListDevicesResponseObject, error) {
	limit := 100
	if req.Params.Limit != nil {
		limit = *req.Params.Limit
	}
	var page store.Page
	var err error
	if req.Params.Parent != nil {
		page, err = s.deps.Registry.ListChildren(ctx, *req.Params.Parent, deref(req.Params.Cursor), limit)
	} else {
		page, err = s.deps.Registry.ListDevices(ctx, deref(req.Params.Cursor), limit)
	}
	if err != nil {
		return nil, err
	}
	out := oapiserver.ListDevices200JSONResponse{Items: make([]oapi.Device, len(page.Devices)), Next: ptrIfSet(page.Next)}
	for i, d := range page.Devices {
		out.Items[i] = deviceToAPI(d)
	}
	return out, nil
}

// UpdateDevice enables, disables or re-caps a device.
func (s *Server) UpdateDevice(ctx context.Context, req oapiserver.UpdateDeviceRequestObject) (oapiserver.UpdateDeviceResponseObject, error) {
	if err := checkDeviceID(req.DeviceId); err != nil {
		return nil, err
	}
	p := registry.DevicePatch{Disabled: req.Body.Disabled, Gateway: req.Body.Gateway, Parent: req.Body.Parent}
	if req.Body.MaxTtlSeconds != nil {
		ttl := durationOf(req.Body.MaxTtlSeconds)
		p.MaxTTL = &ttl
	}
	d, err := s.deps.Registry.UpdateDevice(ctx, req.DeviceId, p)
	if err != nil {
		return nil, err
	}
	s.log.InfoContext(ctx, "device updated", "device", d.ID, "disabled", d.Disabled, "gateway", d.Gateway, "parent", d.Parent)
	return oapiserver.UpdateDevice200JSONResponse(deviceToAPI(d)), nil
}

// DeleteDevice removes a device.
func (s *Server) DeleteDevice(ctx context.Context, req oapiserver.DeleteDeviceRequestObject) (oapiserver.DeleteDeviceResponseObject, error) {
	if err := checkDeviceID(req.DeviceId); err != nil {
		return nil, err
	}
	if err := s.deps.Registry.DeleteDevice(ctx, req.DeviceId); err != nil {
		return nil, err
	}
	s.log.InfoContext(ctx, "device deleted", "device", req.DeviceId)
	return oapiserver.DeleteDevice204Response{}, nil
}

// GetHealthz reports liveness.
func (s *Server) GetHealthz(context.Context, oapiserver.GetHealthzRequestObject) (oapiserver.GetHealthzResponseObject, error) {
	return oapiserver.GetHealthz200JSONResponse{Status: "ok"}, nil
}

// GetReadyz reports whether the store can serve.
func (s *Server) GetReadyz(ctx context.Context, _ oapiserver.GetReadyzRequestObject) (oapiserver.GetReadyzResponseObject, error) {
	if s.deps.Ready == nil {
		return oapiserver.GetReadyz200JSONResponse{Status: "ok"}, nil
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	note, err := s.deps.Ready(ctx)
	if err != nil {
		s.log.WarnContext(ctx, "not ready", "error", err.Error())
		return nil, fmt.Errorf("readiness: %w", store.ErrUnavailable)
	}
	if note != "" {
		return oapiserver.GetReadyz200JSONResponse{Status: "degraded", Detail: &note}, nil
	}
	return oapiserver.GetReadyz200JSONResponse{Status: "ok"}, nil
}

// checkDeviceID applies the ID rules to the decoded path parameter: the spec validator
// sees it still percent-encoded, where %2F passes as three allowed characters.
func checkDeviceID(id string) error {
	if !domain.ValidID(id) {
		return domain.Public(errBadRequest, "path parameter deviceId: not a valid device ID")
	}
	return nil
}

// NonceIssuer hands out single-use nonces for assertions from devices without a clock.
// The DeviceVerifier provides it (a nonce is only good at the verifier that issued it).
type NonceIssuer interface {
	IssueNonce() (nonce string, expiresAt time.Time)
}

// CreateNonce hands a device without a clock a single-use nonce for its assertion.
func (s *Server) CreateNonce(ctx context.Context, _ oapiserver.CreateNonceRequestObject) (oapiserver.CreateNonceResponseObject, error) {
	issuer, ok := s.deps.Devices.(NonceIssuer)
	if !ok {
		return nil, fmt.Errorf("CreateNonce: the device verifier issues no nonces")
	}
	nonce, expires := issuer.IssueNonce()
	serverTime := expires.Add(-deviceauth.NonceTTL)
	return oapiserver.CreateNonce200JSONResponse{
		Headers: oapiserver.CreateNonce200ResponseHeaders{CacheControl: &noStore},
		Body:    oapi.Nonce{Nonce: nonce, ExpiresAt: expires.UTC(), ServerTime: serverTime.UTC()},
	}, nil
}

// RotateDeviceKeys promotes the secondary key and returns the new pair once.
func (s *Server) RotateDeviceKeys(ctx context.Context, req oapiserver.RotateDeviceKeysRequestObject) (oapiserver.RotateDeviceKeysResponseObject, error) {
	if err := checkDeviceID(req.DeviceId); err != nil {
		return nil, err
	}
	var module string
	if req.Body != nil {
		module = deref(req.Body.Module)
	}
	r, err := s.deps.Registry.RotateKeys(ctx, req.DeviceId, module)
	if err != nil {
		return nil, err
	}
	s.log.InfoContext(ctx, "device keys rotated", "device", r.DeviceID, "module", r.ModuleID)
	return oapiserver.RotateDeviceKeys200JSONResponse{
		Headers: oapiserver.RotateDeviceKeys200ResponseHeaders{CacheControl: &noStore},
		Body: oapi.RotatedKeys{
			DeviceId:     r.DeviceID,
			Module:       ptrIfSet(r.ModuleID),
			PrimaryKey:   r.PrimaryKey,
			SecondaryKey: r.SecondaryKey,
		},
	}, nil
}

// RevokeDevice refuses the device's assertions and nonces issued before now.
func (s *Server) RevokeDevice(ctx context.Context, req oapiserver.RevokeDeviceRequestObject) (oapiserver.RevokeDeviceResponseObject, error) {
	if err := checkDeviceID(req.DeviceId); err != nil {
		return nil, err
	}
	d, err := s.deps.Registry.Revoke(ctx, req.DeviceId)
	if err != nil {
		return nil, err
	}
	s.log.InfoContext(ctx, "device revoked", "device", d.ID, "revokedAt", d.RevokedAt)
	return oapiserver.RevokeDevice200JSONResponse(deviceToAPI(d)), nil
}
