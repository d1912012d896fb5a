package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"time"

	"github.com/tokensvc/tokensvc/internal/oapi"
)

// issuerKeyPage is the body of GET /issuer/keys, which the generated client declares
// inline.
type issuerKeyPage = struct {
	Items []oapi.IssuerKey `json:"items"`
}

const issuerKeyHeader = "KID\tALG\tSTATE\tCREATED\tSIGNS FROM\tRETIRED\tPUBLISHED UNTIL\tTRANSIT"

func issuerKeyRow(k oapi.IssuerKey) []string {
	at := func(t *time.Time) string {
		if t == nil {
			return "-"
		}
		return t.UTC().Format(time.RFC3339)
	}
	return []string{k.Kid, string(k.Alg), string(k.State), at(&k.CreatedAt), at(&k.SignsFrom), at(k.RetiredAt), at(k.PublishedUntil), fmt.Sprint(deref(k.Transit))}
}

func issuerKeyPageTable(p *issuerKeyPage) table {
	return table{header: issuerKeyHeader, rows: rowsOf(p.Items, issuerKeyRow)}
}

func rotatedKeyTable(k *oapi.IssuerKey) table {
	note := fmt.Sprintf("key %s is published now and signs from %s; the %s key it replaces stays published until every credential it signed has expired (see issuer-keys list)",
		k.Kid, k.SignsFrom.UTC().Format(time.RFC3339), k.Alg)
	return table{note: note, header: issuerKeyHeader, rows: [][]string{issuerKeyRow(*k)}}
}

func (c *cli) issuerKeyList(ctx context.Context, args []string) error {
	return showAll(ctx, c, "issuer-keys list", args, c.api.ListIssuerKeysWithResponse, (*oapi.ListIssuerKeysResponse).GetJSON200, issuerKeyPageTable)
}

func (c *cli) issuerKeyRotate(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("issuer-keys rotate", flag.ContinueOnError)
	alg := fs.String("alg", "", "RS256 or ES256 (required)")
	if _, err := c.parse(fs, args, 0); err != nil {
		return err
	}
	if *alg == "" {
		return errors.New("issuer-keys rotate: -alg is required (RS256 or ES256)")
	}
	resp, err := c.api.RotateIssuerKeyWithResponse(ctx, oapi.IssuerKeyRotate{Alg: oapi.IssuerKeyAlgorithm(*alg)})
	return show(c, resp, err, (*oapi.RotateIssuerKeyResponse).GetJSON201, rotatedKeyTable)
}
