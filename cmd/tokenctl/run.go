package main

import (
	"bufio"
	"context"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/tokensvc/tokensvc/internal/domain"
	"github.com/tokensvc/tokensvc/internal/oapi"
)

// errUsage means the usage text was printed already.
var errUsage = errors.New("usage")

const usage = `tokenctl — operate tokensvc

Usage:
  tokenctl [-o table|json] <command> [flags] [args]

Devices:
  devices add ID -hub NAME [-auth hs256|es256|eddsa|x509|x509-ca] [-public-key-file PEM] [-cert-file PEM]
                 [-primary-key-file F] [-secondary-key-file F] [-module ID]... [-disabled] [-max-ttl SECONDS]
  devices list [-limit N]
  devices get ID
  devices rotate ID [-module ID]
  devices revoke ID
  devices import FILE|-  [-format ndjson|csv]   (the NDJSON report goes to stdout: it holds the new secrets)

Hubs:
  hubs add NAME -kind iothub|eventhubs|dps -hostname HOST [-mode M] [-policy-name N]
               [-policy-key-file F] [-entity-path P] [-id-scope S] [-gateway HOST] [-transit]
  hubs list
  hubs get NAME

Environment: TOKENSVC_URL (default http://localhost:8080), TOKENSVC_ADMIN_TOKEN (required).
Keys are read from files, never from flags, so they do not show in the process list.
`

// cli is one invocation.
type cli struct {
	api    *oapi.ClientWithResponses
	http   *oapi.Client
	json   bool
	stdout io.Writer
	stderr io.Writer
}

// run is the whole program; main only wires signals and the process environment to it.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	global := flag.NewFlagSet("tokenctl", flag.ContinueOnError)
	global.SetOutput(stderr)
	global.Usage = func() { fmt.Fprint(stderr, usage) }
	output := global.String("o", "table", "output: table or json")
	if err := global.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return errUsage
	}
	if *output != "table" && *output != "json" {
		return fmt.Errorf("-o %q: want table or json", *output)
	}
	rest := global.Args()
	if len(rest) < 2 {
		fmt.Fprint(stderr, usage)
		return errUsage
	}
	token := getenv("TOKENSVC_ADMIN_TOKEN")
	if token == "" {
		return errors.New("TOKENSVC_ADMIN_TOKEN is not set")
	}
	server := getenv("TOKENSVC_URL")
	if server == "" {
		server = "http://localhost:8080"
	}
	auth := oapi.WithRequestEditorFn(func(_ context.Context, r *http.Request) error {
		r.Header.Set("Authorization", "Bearer "+token)
		return nil
	})
	hc := &http.Client{Timeout: 30 * time.Second}
	api, err := oapi.NewClientWithResponses(server, auth, oapi.WithHTTPClient(hc))
	if err != nil {
		return fmt.Errorf("TOKENSVC_URL: %w", err)
	}
	// Imports stream for as long as they take: no overall timeout.
	raw, err := oapi.NewClient(server, auth)
	if err != nil {
		return fmt.Errorf("TOKENSVC_URL: %w", err)
	}
	c := &cli{api: api, http: raw, json: *output == "json", stdout: stdout, stderr: stderr}

	cmd, sub, args := rest[0], rest[1], rest[2:]
	switch cmd + " " + sub {
	case "devices add":
		return c.deviceAdd(ctx, args)
	case "devices list":
		return c.deviceList(ctx, args)
	case "devices get":
		return c.deviceGet(ctx, args)
	case "devices rotate":
		return c.deviceRotate(ctx, args)
	case "devices revoke":
		return c.deviceRevoke(ctx, args)
	case "devices import":
		return c.deviceImport(ctx, args)
	case "hubs add":
		return c.hubAdd(ctx, args)
	case "hubs list":
		return c.hubList(ctx, args)
	case "hubs get":
		return c.hubGet(ctx, args)
	}
	fmt.Fprint(stderr, usage)
	return fmt.Errorf("unknown command %q", cmd+" "+sub)
}

// parse parses flags and positional arguments in any order and wants exactly nPos
// positional arguments.
func (c *cli) parse(fs *flag.FlagSet, args []string, nPos int, what string) ([]string, error) {
	fs.SetOutput(c.stderr)
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, errUsage
		}
		if fs.NArg() == 0 {
			break
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
	if len(pos) != nPos {
		return nil, fmt.Errorf("%s: want %d argument(s), got %d", what, nPos, len(pos))
	}
	return pos, nil
}

// check turns a response other than want into an error carrying the service's problem.
func check(resp *http.Response, body []byte, want int) error {
	if resp.StatusCode == want {
		return nil
	}
	var p oapi.Problem
	if json.Unmarshal(body, &p) == nil && p.Title != "" {
		if p.Detail != nil && *p.Detail != "" {
			return fmt.Errorf("%d %s: %s", resp.StatusCode, p.Title, *p.Detail)
		}
		return fmt.Errorf("%d %s", resp.StatusCode, p.Title)
	}
	return fmt.Errorf("unexpected response %s", resp.Status)
}

func (c *cli) printJSON(v any) error {
	enc := json.NewEncoder(c.stdout)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}

func (c *cli) table(header string, rows [][]string) error {
	tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, header)
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	return tw.Flush()
}

func readFileFlag(path, what string) (*string, error) {
	if path == "" {
		return nil, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	s := strings.TrimSpace(string(b))
	if what == "public key" {
		s = string(b)
	}
	return &s, nil
}

// certFingerprint reads the first certificate of a PEM file and returns the fingerprint
// an x509 credential pins.
func certFingerprint(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("certificate: %w", err)
	}
	block, _ := pem.Decode(b)
	if block == nil || block.Type != "CERTIFICATE" {
		return "", fmt.Errorf("certificate: %s holds no PEM CERTIFICATE", path)
	}
	return domain.CertFingerprint(block.Bytes), nil
}

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
	var modules multi
	fs.Var(&modules, "module", "module ID (repeatable)")
	pos, err := c.parse(fs, args, 1, "devices add")
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
	if len(modules) > 0 {
		ms := make([]oapi.ModuleCreate, len(modules))
		for i, m := range modules {
			ms[i].ModuleId = m
		}
		body.Modules = &ms
	}
	resp, err := c.api.CreateDeviceWithResponse(ctx, body)
	if err != nil {
		return err
	}
	if err := check(resp.HTTPResponse, resp.Body, http.StatusCreated); err != nil {
		return err
	}
	d := resp.JSON201
	if c.json {
		return c.printJSON(d)
	}
	// The secrets are shown only now: print them, plainly labelled.
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
	fmt.Fprintln(c.stderr, "tokenctl: the secrets below are shown once; store them now")
	return c.table("FIELD\tVALUE", rows)
}

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
	modules := strings.Join(mods, ",")
	if modules == "" {
		modules = "-"
	}
	return []string{d.DeviceId, d.Hub, string(d.Auth.Type), status, modules, revoked, d.CreatedAt.UTC().Format(time.RFC3339)}
}

const deviceHeader = "DEVICE\tHUB\tAUTH\tSTATUS\tMODULES\tREVOKED\tCREATED"

func (c *cli) deviceList(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("devices list", flag.ContinueOnError)
	limit := fs.Int("limit", 0, "list at most N devices (0: all)")
	if _, err := c.parse(fs, args, 0, "devices list"); err != nil {
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
		if cursor != "" {
			params.Cursor = &cursor
		}
		resp, err := c.api.ListDevicesWithResponse(ctx, params)
		if err != nil {
			return err
		}
		if err := check(resp.HTTPResponse, resp.Body, http.StatusOK); err != nil {
			return err
		}
		all = append(all, resp.JSON200.Items...)
		if resp.JSON200.Next == nil || (*limit > 0 && len(all) >= *limit) {
			break
		}
		cursor = *resp.JSON200.Next
	}
	if c.json {
		return c.printJSON(map[string]any{"items": all})
	}
	rows := make([][]string, len(all))
	for i, d := range all {
		rows[i] = deviceRow(d)
	}
	return c.table(deviceHeader, rows)
}

func (c *cli) deviceGet(ctx context.Context, args []string) error {
	pos, err := c.parse(flag.NewFlagSet("devices get", flag.ContinueOnError), args, 1, "devices get")
	if err != nil {
		return err
	}
	resp, err := c.api.GetDeviceWithResponse(ctx, pos[0])
	if err != nil {
		return err
	}
	if err := check(resp.HTTPResponse, resp.Body, http.StatusOK); err != nil {
		return err
	}
	if c.json {
		return c.printJSON(resp.JSON200)
	}
	return c.table(deviceHeader, [][]string{deviceRow(*resp.JSON200)})
}

func (c *cli) deviceRotate(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("devices rotate", flag.ContinueOnError)
	module := fs.String("module", "", "rotate this module's keys instead")
	pos, err := c.parse(fs, args, 1, "devices rotate")
	if err != nil {
		return err
	}
	var body oapi.RotateDeviceKeysJSONRequestBody
	if *module != "" {
		body.Module = module
	}
	resp, err := c.api.RotateDeviceKeysWithResponse(ctx, pos[0], body)
	if err != nil {
		return err
	}
	if err := check(resp.HTTPResponse, resp.Body, http.StatusOK); err != nil {
		return err
	}
	r := resp.JSON200
	if c.json {
		return c.printJSON(r)
	}
	fmt.Fprintln(c.stderr, "tokenctl: set these keys on the hub; the new secondary key is shown once")
	return c.table("DEVICE\tMODULE\tPRIMARY KEY\tSECONDARY KEY", [][]string{{r.DeviceId, orDash(deref(r.Module)), r.PrimaryKey, r.SecondaryKey}})
}

func (c *cli) deviceRevoke(ctx context.Context, args []string) error {
	pos, err := c.parse(flag.NewFlagSet("devices revoke", flag.ContinueOnError), args, 1, "devices revoke")
	if err != nil {
		return err
	}
	resp, err := c.api.RevokeDeviceWithResponse(ctx, pos[0])
	if err != nil {
		return err
	}
	if err := check(resp.HTTPResponse, resp.Body, http.StatusOK); err != nil {
		return err
	}
	if c.json {
		return c.printJSON(resp.JSON200)
	}
	return c.table(deviceHeader, [][]string{deviceRow(*resp.JSON200)})
}

// deviceImport streams FILE to the service and the report to stdout as it arrives; the
// summary also goes to stderr. The report is NDJSON in both output modes: it carries
// the generated secrets, and a table would lose them.
func (c *cli) deviceImport(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("devices import", flag.ContinueOnError)
	format := fs.String("format", "", "ndjson or csv (default: from the file name, else ndjson)")
	pos, err := c.parse(fs, args, 1, "devices import")
	if err != nil {
		return err
	}
	var in io.Reader = os.Stdin
	if pos[0] != "-" {
		f, err := os.Open(pos[0])
		if err != nil {
			return err
		}
		defer f.Close()
		in = f
	}
	if *format == "" {
		*format = "ndjson"
		if strings.EqualFold(filepath.Ext(pos[0]), ".csv") {
			*format = "csv"
		}
	}
	ct := map[string]string{"ndjson": "application/x-ndjson", "csv": "text/csv"}[*format]
	if ct == "" {
		return fmt.Errorf("-format %q: want ndjson or csv", *format)
	}
	resp, err := c.http.ImportDevicesWithBody(ctx, ct, in)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		return check(resp, body, http.StatusOK)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	var summary struct {
		Summary *struct{ Created, Skipped, Rejected int } `json:"summary"`
		Error   string                                    `json:"error"`
	}
	for sc.Scan() {
		if _, err := fmt.Fprintf(c.stdout, "%s\n", sc.Bytes()); err != nil {
			return err
		}
		_ = json.Unmarshal(sc.Bytes(), &summary)
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("reading the report: %w", err)
	}
	if summary.Summary == nil {
		return errors.New("the report ended without a summary; the import may be incomplete")
	}
	s := summary.Summary
	fmt.Fprintf(c.stderr, "tokenctl: %d created, %d skipped, %d rejected\n", s.Created, s.Skipped, s.Rejected)
	if summary.Error != "" {
		return fmt.Errorf("import stopped: %s", summary.Error)
	}
	if s.Rejected > 0 {
		return fmt.Errorf("%d line(s) rejected; see the report", s.Rejected)
	}
	return nil
}

func hubRow(h oapi.Hub) []string {
	return []string{h.Name, string(h.Kind), h.Hostname, string(h.Mode), fmt.Sprint(deref(h.Transit)), fmt.Sprint(h.DefaultTtlSeconds), fmt.Sprint(h.MaxTtlSeconds)}
}

const hubHeader = "HUB\tKIND\tHOSTNAME\tMODE\tTRANSIT\tDEFAULT TTL\tMAX TTL"

func (c *cli) hubAdd(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("hubs add", flag.ContinueOnError)
	kind := fs.String("kind", "iothub", "iothub, eventhubs or dps")
	hostname := fs.String("hostname", "", "hub hostname (required)")
	mode := fs.String("mode", "", "deviceKey, policy or groupKey")
	policyName := fs.String("policy-name", "", "shared access policy name")
	policyKeyFile := fs.String("policy-key-file", "", "file holding the policy or group key")
	entity := fs.String("entity-path", "", "event hub name (eventhubs)")
	idScope := fs.String("id-scope", "", "DPS ID scope (dps)")
	gateway := fs.String("gateway", "", "IoT Edge gateway host name")
	transit := fs.Bool("transit", false, "keep keys in Vault Transit")
	pos, err := c.parse(fs, args, 1, "hubs add")
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
	if err != nil {
		return err
	}
	if err := check(resp.HTTPResponse, resp.Body, http.StatusCreated); err != nil {
		return err
	}
	if c.json {
		return c.printJSON(resp.JSON201)
	}
	return c.table(hubHeader, [][]string{hubRow(*resp.JSON201)})
}

func (c *cli) hubList(ctx context.Context, args []string) error {
	if _, err := c.parse(flag.NewFlagSet("hubs list", flag.ContinueOnError), args, 0, "hubs list"); err != nil {
		return err
	}
	resp, err := c.api.ListHubsWithResponse(ctx)
	if err != nil {
		return err
	}
	if err := check(resp.HTTPResponse, resp.Body, http.StatusOK); err != nil {
		return err
	}
	if c.json {
		return c.printJSON(resp.JSON200)
	}
	rows := make([][]string, len(resp.JSON200.Items))
	for i, h := range resp.JSON200.Items {
		rows[i] = hubRow(h)
	}
	return c.table(hubHeader, rows)
}

func (c *cli) hubGet(ctx context.Context, args []string) error {
	pos, err := c.parse(flag.NewFlagSet("hubs get", flag.ContinueOnError), args, 1, "hubs get")
	if err != nil {
		return err
	}
	resp, err := c.api.GetHubWithResponse(ctx, pos[0])
	if err != nil {
		return err
	}
	if err := check(resp.HTTPResponse, resp.Body, http.StatusOK); err != nil {
		return err
	}
	if c.json {
		return c.printJSON(resp.JSON200)
	}
	return c.table(hubHeader, [][]string{hubRow(*resp.JSON200)})
}

func deref[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}

func ptrIfSet(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
