package filestore

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/tokensvc/tokensvc/internal/domain"
)

// opKind names a change in the log; the strings are part of the file format.
type opKind string

const (
	opPutHub       opKind = "putHub"
	opDeleteHub    opKind = "deleteHub"
	opPutDevice    opKind = "putDevice"
	opDeleteDevice opKind = "deleteDevice"
	opPutSetting   opKind = "putSetting"
)

// op is one change, in domain types; the wire types below are its on-disk form.
type op struct {
	kind   opKind
	name   string // deleteHub, deleteDevice, putSetting
	hub    *domain.Hub
	device *domain.Device
	value  []byte
}

// The wire types spell out the file format with explicit JSON names, so renaming or
// adding a field in package store cannot silently change what old files mean.
type wireOp struct {
	Op     opKind      `json:"op"`
	Name   string      `json:"name,omitempty"`
	Hub    *wireHub    `json:"hub,omitempty"`
	Device *wireDevice `json:"device,omitempty"`
	Value  []byte      `json:"value,omitempty"`
}

type wireHub struct {
	Name            string            `json:"name"`
	Kind            string            `json:"kind,omitempty"`
	Hostname        string            `json:"hostname,omitempty"`
	EntityPath      string            `json:"entityPath,omitempty"`
	IDScope         string            `json:"idScope,omitempty"`
	Mode            string            `json:"mode,omitempty"`
	PolicyName      string            `json:"policyName,omitempty"`
	PolicyKey       string            `json:"policyKey,omitempty"`
	GatewayHostName string            `json:"gatewayHostName,omitempty"`
	CACert          string            `json:"caCert,omitempty"`
	Transit         bool              `json:"transit,omitempty"`
	Settings        map[string]string `json:"settings,omitempty"`
	DefaultTTL      int64             `json:"defaultTTLNanos,omitempty"`
	MaxTTL          int64             `json:"maxTTLNanos,omitempty"`
	CreatedAt       time.Time         `json:"createdAt"`
}

type wireModule struct {
	ID           string `json:"id"`
	PrimaryKey   string `json:"primaryKey,omitempty"`
	SecondaryKey string `json:"secondaryKey,omitempty"`
}

// wireDevice keeps Modules and Secret without omitempty so nil and empty survive a
// round trip as themselves.
type wireDevice struct {
	ID           string       `json:"id"`
	Hub          string       `json:"hub"`
	PrimaryKey   string       `json:"primaryKey,omitempty"`
	SecondaryKey string       `json:"secondaryKey,omitempty"`
	Modules      []wireModule `json:"modules"`
	AuthType     string       `json:"authType,omitempty"`
	Secret       []byte       `json:"secret"`
	PublicKey    string       `json:"publicKey,omitempty"`
	CertFP       string       `json:"certFingerprint,omitempty"`
	Disabled     bool         `json:"disabled,omitempty"`
	MaxTTL       int64        `json:"maxTTLNanos,omitempty"`
	RevokedAt    time.Time    `json:"revokedAt,omitzero"`
	CreatedAt    time.Time    `json:"createdAt"`
	UpdatedAt    time.Time    `json:"updatedAt"`
}

func toWireHub(h *domain.Hub) *wireHub {
	return &wireHub{
		Name:            h.Name,
		Kind:            string(h.Kind),
		Hostname:        h.Hostname,
		EntityPath:      h.EntityPath,
		IDScope:         h.IDScope,
		Mode:            string(h.Mode),
		PolicyName:      h.PolicyName,
		PolicyKey:       h.PolicyKey,
		GatewayHostName: h.GatewayHostName,
		CACert:          h.CACert,
		Transit:         h.Transit,
		Settings:        h.Settings,
		DefaultTTL:      int64(h.DefaultTTL),
		MaxTTL:          int64(h.MaxTTL),
		CreatedAt:       h.CreatedAt,
	}
}

func (w *wireHub) hub() *domain.Hub {
	return &domain.Hub{
		Name:            w.Name,
		Kind:            domain.HubKind(w.Kind),
		Hostname:        w.Hostname,
		EntityPath:      w.EntityPath,
		IDScope:         w.IDScope,
		Mode:            domain.SigningMode(w.Mode),
		PolicyName:      w.PolicyName,
		PolicyKey:       w.PolicyKey,
		GatewayHostName: w.GatewayHostName,
		CACert:          w.CACert,
		Transit:         w.Transit,
		Settings:        w.Settings,
		DefaultTTL:      time.Duration(w.DefaultTTL),
		MaxTTL:          time.Duration(w.MaxTTL),
		CreatedAt:       w.CreatedAt,
	}
}

func toWireDevice(d *domain.Device) *wireDevice {
	w := &wireDevice{
		ID:           d.ID,
		Hub:          d.Hub,
		PrimaryKey:   d.PrimaryKey,
		SecondaryKey: d.SecondaryKey,
		AuthType:     string(d.Auth.Type),
		Secret:       d.Auth.Secret,
		PublicKey:    d.Auth.PublicKey,
		CertFP:       d.Auth.CertFingerprint,
		Disabled:     d.Disabled,
		MaxTTL:       int64(d.MaxTTL),
		RevokedAt:    d.RevokedAt,
		CreatedAt:    d.CreatedAt,
		UpdatedAt:    d.UpdatedAt,
	}
	if d.Modules != nil {
		w.Modules = make([]wireModule, len(d.Modules))
		for i, m := range d.Modules {
			w.Modules[i] = wireModule(m)
		}
	}
	return w
}

func (w *wireDevice) device() *domain.Device {
	d := &domain.Device{
		ID:           w.ID,
		Hub:          w.Hub,
		PrimaryKey:   w.PrimaryKey,
		SecondaryKey: w.SecondaryKey,
		Auth: domain.Credential{
			Type:            domain.CredentialType(w.AuthType),
			Secret:          w.Secret,
			PublicKey:       w.PublicKey,
			CertFingerprint: w.CertFP,
		},
		Disabled:  w.Disabled,
		MaxTTL:    time.Duration(w.MaxTTL),
		RevokedAt: w.RevokedAt,
		CreatedAt: w.CreatedAt,
		UpdatedAt: w.UpdatedAt,
	}
	if w.Modules != nil {
		d.Modules = make([]domain.Module, len(w.Modules))
		for i, m := range w.Modules {
			d.Modules[i] = domain.Module(m)
		}
	}
	return d
}

func encodeOp(o *op) ([]byte, error) {
	w := wireOp{Op: o.kind, Name: o.name, Value: o.value}
	if o.hub != nil {
		w.Hub = toWireHub(o.hub)
	}
	if o.device != nil {
		w.Device = toWireDevice(o.device)
	}
	b, err := json.Marshal(&w)
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", o.kind, err)
	}
	return b, nil
}

// joinBatch assembles encoded ops into the JSON document one frame carries.
func joinBatch(ops [][]byte) []byte {
	n := len(`{"ops":[]}`) + len(ops)
	for _, o := range ops {
		n += len(o)
	}
	b := make([]byte, 0, n)
	b = append(b, `{"ops":[`...)
	for i, o := range ops {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, o...)
	}
	return append(b, "]}"...)
}

// decodeBatch parses a frame's plaintext. Unknown fields are refused rather than
// ignored: an older build that dropped them would lose them for good at its next
// compaction.
func decodeBatch(payload []byte) ([]op, error) {
	var batch struct {
		Ops []wireOp `json:"ops"`
	}
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&batch); err != nil {
		return nil, fmt.Errorf("decode records: %w", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, errors.New("decode records: trailing data")
	}
	if len(batch.Ops) == 0 {
		return nil, errors.New("decode records: empty batch")
	}
	ops := make([]op, len(batch.Ops))
	for i, w := range batch.Ops {
		o := op{kind: w.Op, name: w.Name, value: w.Value}
		if w.Hub != nil {
			o.hub = w.Hub.hub()
		}
		if w.Device != nil {
			o.device = w.Device.device()
		}
		ops[i] = o
	}
	return ops, nil
}
