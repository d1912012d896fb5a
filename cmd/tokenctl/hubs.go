package main

import (
	"context"
	"errors"
	"flag"
	"fmt"

	"github.com/tokensvc/tokensvc/internal/oapi"
)

// hubPage is the body of GET /hubs, which the generated client declares inline.
type hubPage = struct {
	Items []oapi.Hub `json:"items"`
}

const hubHeader = "HUB\tKIND\tHOSTNAME\tMODE\tTRANSIT\tDEFAULT TTL\tMAX TTL"

func hubRow(h oapi.Hub) []string {
	return []string{h.Name, string(h.Kind), h.Hostname, string(h.Mode), fmt.Sprint(deref(h.Transit)), fmt.Sprint(h.DefaultTtlSeconds), fmt.Sprint(h.MaxTtlSeconds)}
}

func hubTable(h *oapi.Hub) table {
	return table{header: hubHeader, rows: [][]string{hubRow(*h)}}
}

func hubPageTable(p *hubPage) table {
	return table{header: hubHeader, rows: rowsOf(p.Items, hubRow)}
}

func (c *cli) hubAdd(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("hubs add", flag.ContinueOnError)
	kind := fs.String("kind", "iothub", "iothub, eventhubs or dps")
	hostname := fs.String("hostname", "", "hub hostname (required)")
	mode := fs.String("mode", "", "deviceKey, policy, groupKey or certificate")
	policyName := fs.String("policy-name", "", "shared access policy name")
	policyKeyFile := fs.String("policy-key-file", "", "file holding the policy or group key")
	entity := fs.String("entity-path", "", "event hub name (eventhubs)")
	idScope := fs.String("id-scope", "", "DPS ID scope (dps)")
	gateway := fs.String("gateway", "", "IoT Edge gateway host name")
	transit := fs.Bool("transit", false, "keep keys in Vault Transit")
	pos, err := c.parse(fs, args, 1)
	if err != nil {
		return err
	}
	if *hostname == "" {
		return errors.New("hubs add: -hostname is required")
	}
	body := oapi.HubCreate{Name: pos[0], Kind: oapi.HubKind(*kind), Hostname: *hostname}
	if body.PolicyKey, err = readFileFlag(*policyKeyFile, "policy key"); err != nil {
		return err
	}
	if *mode != "" {
		m := oapi.SigningMode(*mode)
		body.Mode = &m
	}
	body.PolicyName = ptrIfSet(*policyName)
	body.EntityPath = ptrIfSet(*entity)
	body.IdScope = ptrIfSet(*idScope)
	body.GatewayHostName = ptrIfSet(*gateway)
	if *transit {
		body.Transit = transit
	}
	resp, err := c.api.CreateHubWithResponse(ctx, body)
	return show(c, resp, err, (*oapi.CreateHubResponse).GetJSON201, hubTable)
}

func (c *cli) hubList(ctx context.Context, args []string) error {
	return showAll(ctx, c, "hubs list", args, c.api.ListHubsWithResponse, (*oapi.ListHubsResponse).GetJSON200, hubPageTable)
}

func (c *cli) hubGet(ctx context.Context, args []string) error {
	return showOne(ctx, c, "hubs get", args, c.api.GetHubWithResponse, (*oapi.GetHubResponse).GetJSON200, hubTable)
}

// hubCA prints the PEM CA chain of a hub in mode certificate, as it is (with -o json
// too: it is what `aws iot register-ca-certificate` and `az iot hub certificate
// create` take).
func (c *cli) hubCA(ctx context.Context, args []string) error {
	pos, err := c.positional("hubs ca", args, 1)
	if err != nil {
		return err
	}
	resp, err := c.api.GetHubCAWithResponse(ctx, pos[0])
	if err != nil {
		return err
	}
	if resp.StatusCode() != 200 {
		return problemError(resp.StatusCode(), resp.Status(), resp.Body)
	}
	_, err = c.stdout.Write(resp.Body)
	return err
}

func ptrIfSet(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}
