package main

import (
	"context"
	"errors"
	"flag"
	"strings"
	"time"

	"github.com/tokensvc/tokensvc/internal/oapi"
)

const deviceHeader = "DEVICE\tHUB\tAUTH\tSTATUS\tMODULES\tREVOKED\tCREATED"

func deviceRow(d oapi.Device) []string {
	status := "enabled"
	if d.Disabled {
		status = "disabled"
	}
	revoked := "-"
	if d.RevokedAt != nil {
		revoked = d.RevokedAt.UTC().Format(time.RFC3339)
	}
	mods := make([]string, len(d.Modules))
	for i, m := range d.Modules {
		mods[i] = m.ModuleId
	}
	return []string{d.DeviceId, d.Hub, string(d.Auth.Type), status, orDash(strings.Join(mods, ",")), revoked, d.CreatedAt.UTC().Format(time.RFC3339)}
}

func deviceTable(d *oapi.Device) table {
	return table{header: deviceHeader, rows: [][]string{deviceRow(*d)}}
}

// createdTable shows the secrets of a new device: they are shown only now, so they are
// printed plainly labelled.
func createdTable(d *oapi.DeviceCreated) table {
	rows := [][]string{{"deviceId", d.Device.DeviceId}, {"hub", d.Device.Hub}, {"auth", string(d.Auth.Type)}}
	if d.Auth.Secret != nil {
		rows = append(rows, []string{"secret", *d.Auth.Secret})
	}
	if d.PrimaryKey != nil {
		rows = append(rows, []string{"primaryKey", *d.PrimaryKey}, []string{"secondaryKey", deref(d.SecondaryKey)})
	}
	for _, m := range d.Modules {
		rows = append(rows, []string{"module " + m.ModuleId + " primaryKey", m.PrimaryKey}, []string{"module " + m.ModuleId + " secondaryKey", m.SecondaryKey})
	}
	return table{note: "the secrets below are shown once; store them now", header: "FIELD\tVALUE", rows: rows}
}

func rotatedTable(r *oapi.RotatedKeys) table {
	return table{
		note:   "set these keys on the hub; the new secondary key is shown once",
		header: "DEVICE\tMODULE\tPRIMARY KEY\tSECONDARY KEY",
		rows:   [][]string{{r.DeviceId, orDash(deref(r.Module)), r.PrimaryKey, r.SecondaryKey}},
	}
}

// multi is a repeatable string flag.
type multi []string

func (m *multi) String() string     { return strings.Join(*m, ",") }
func (m *multi) Set(v string) error { *m = append(*m, v); return nil }

func (c *cli) deviceAdd(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("devices add", flag.ContinueOnError)
	hub := fs.String("hub", "", "hub name (required)")
	authType := fs.String("auth", "hs256", "credential: hs256, es256, eddsa, x509 or x509-ca")
	pubFile := fs.String("public-key-file", "", "PEM public key (es256, eddsa)")
	certFile := fs.String("cert-file", "", "PEM client certificate whose fingerprint to pin (x509)")
	pFile := fs.String("primary-key-file", "", "file holding the primary SAS key (generated if absent)")
	sFile := fs.String("secondary-key-file", "", "file holding the secondary SAS key (generated if absent)")
	disabled := fs.Bool("disabled", false, "create disabled")
	maxTTL := fs.Int("max-ttl", 0, "cap token lifetimes (seconds)")
	gateway := fs.Bool("gateway", false, "a field gateway: it may obtain its children's tokens")
	parent := fs.String("parent", "", "the gateway this device sits behind")
	var modules multi
	fs.Var(&modules, "module", "module ID (repeatable)")
	pos, err := c.parse(fs, args, 1)
	if err != nil {
		return err
	}
	if *hub == "" {
		return errors.New("devices add: -hub is required")
	}
	body := oapi.DeviceCreate{DeviceId: pos[0], Hub: *hub, Auth: oapi.CredentialCreate{Type: oapi.CredentialType(*authType)}}
	if body.Auth.PublicKey, err = readFileFlag(*pubFile, "public key"); err != nil {
		return err
	}
	if *certFile != "" {
		fp, err := certFingerprint(*certFile)
		if err != nil {
			return err
		}
		body.Auth.CertFingerprint = &fp
	}
	if body.PrimaryKey, err = readFileFlag(*pFile, "primary key"); err != nil {
		return err
	}
	if body.SecondaryKey, err = readFileFlag(*sFile, "secondary key"); err != nil {
		return err
	}
	if *disabled {
		body.Disabled = disabled
	}
	if *maxTTL != 0 {
		body.MaxTtlSeconds = maxTTL
	}
	if *gateway {
		body.Gateway = gateway
	}
	if *parent != "" {
		body.Parent = parent
	}
	if len(modules) > 0 {
		ms := make([]oapi.ModuleCreate, len(modules))
		for i, m := range modules {
			ms[i].ModuleId = m
		}
		body.Modules = &ms
	}
	resp, err := c.api.CreateDeviceWithResponse(ctx, body)
	return show(c, resp, err, (*oapi.CreateDeviceResponse).GetJSON201, createdTable)
}

// deviceList pages through the devices, up to -limit of them, and prints them together.
func (c *cli) deviceList(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("devices list", flag.ContinueOnError)
	limit := fs.Int("limit", 0, "list at most N devices (0: all)")
	parent := fs.String("parent", "", "only the children of this gateway")
	if _, err := c.parse(fs, args, 0); err != nil {
		return err
	}
	var all []oapi.Device
	cursor := ""
	for {
		page := 1000
		if *limit > 0 {
			page = min(page, *limit-len(all))
		}
		params := &oapi.ListDevicesParams{Limit: &page}
		if *parent != "" {
			params.Parent = parent
		}
		if cursor != "" {
			params.Cursor = &cursor
		}
		resp, err := c.api.ListDevicesWithResponse(ctx, params)
		p, err := fetch(resp, err, (*oapi.ListDevicesResponse).GetJSON200)
		if err != nil {
			return err
		}
		all = append(all, p.Items...)
		if p.Next == nil || (*limit > 0 && len(all) >= *limit) {
			break
		}
		cursor = *p.Next
	}
	return c.print(map[string]any{"items": all}, func() table {
		return table{header: deviceHeader, rows: rowsOf(all, deviceRow)}
	})
}

func (c *cli) deviceGet(ctx context.Context, args []string) error {
	return showOne(ctx, c, "devices get", args, c.api.GetDeviceWithResponse, (*oapi.GetDeviceResponse).GetJSON200, deviceTable)
}

func (c *cli) deviceRotate(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("devices rotate", flag.ContinueOnError)
	module := fs.String("module", "", "rotate this module's keys instead")
	pos, err := c.parse(fs, args, 1)
	if err != nil {
		return err
	}
	var body oapi.RotateDeviceKeysJSONRequestBody
	if *module != "" {
		body.Module = module
	}
	resp, err := c.api.RotateDeviceKeysWithResponse(ctx, pos[0], body)
	return show(c, resp, err, (*oapi.RotateDeviceKeysResponse).GetJSON200, rotatedTable)
}

func (c *cli) deviceRevoke(ctx context.Context, args []string) error {
	return showOne(ctx, c, "devices revoke", args, c.api.RevokeDeviceWithResponse, (*oapi.RevokeDeviceResponse).GetJSON200, deviceTable)
}
