package filestore

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/tokensvc/tokensvc/internal/domain"
	"github.com/tokensvc/tokensvc/internal/store/record"
)

// Part of the v1 reader (see legacy_format.go), used only to migrate v1 files.

// opKind names a change in the log; the strings are part of the file format.
type opKind string

const (
	opPutHub       opKind = "putHub"
	opDeleteHub    opKind = "deleteHub"
	opPutDevice    opKind = "putDevice"
	opDeleteDevice opKind = "deleteDevice"
	opPutSetting   opKind = "putSetting"
)

// op is one change, in domain types; wireOp is its on-disk form.
type op struct {
	kind   opKind
	name   string // deleteHub, deleteDevice, putSetting
	hub    *domain.Hub
	device *domain.Device
	value  []byte
}

// wireOp is one change as the file holds it; hubs and devices in package record's
// stored form, so renaming or adding a field in package domain cannot silently change
// what old files mean.
type wireOp struct {
	Op     opKind         `json:"op"`
	Name   string         `json:"name,omitempty"`
	Hub    *record.Hub    `json:"hub,omitempty"`
	Device *record.Device `json:"device,omitempty"`
	Value  []byte         `json:"value,omitempty"`
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
			h := w.Hub.Domain()
			o.hub = &h
		}
		if w.Device != nil {
			d := w.Device.Domain()
			o.device = &d
		}
		ops[i] = o
	}
	return ops, nil
}
