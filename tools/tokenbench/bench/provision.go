package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/tokensvc/tokensvc/internal/oapi"
)

// Admin provisions hubs and devices through tokensvc's operator API, with the generated
// client: the benchmarks set the service up the way an operator would, never by
// writing to its store.
type Admin struct {
	api *oapi.ClientWithResponses
}

// NewAdmin is an Admin for the service at baseURL with the operator token.
func NewAdmin(baseURL, token string, client *http.Client) (*Admin, error) {
	api, err := oapi.NewClientWithResponses(baseURL, oapi.WithHTTPClient(client),
		oapi.WithRequestEditorFn(func(_ context.Context, r *http.Request) error {
			r.Header.Set("Authorization", "Bearer "+token)
			return nil
		}))
	if err != nil {
		return nil, fmt.Errorf("operator API client: %w", err)
	}
	return &Admin{api: api}, nil
}

// EnsureHub creates hub (kind iothub, device keys) or leaves it if it exists. transit
// asks for a hub whose keys live in Vault Transit.
func (a *Admin) EnsureHub(ctx context.Context, hub string, transit bool) error {
	body := oapi.HubCreate{Name: hub, Kind: oapi.Iothub, Hostname: hub + ".azure-devices.net"}
	if transit {
		body.Transit = &transit
	}
	return a.ensure(ctx, body)
}

// ensure creates the hub body describes, or leaves it if one of its name exists.
func (a *Admin) ensure(ctx context.Context, body oapi.HubCreate) error {
	hub := body.Name
	resp, err := a.api.CreateHubWithResponse(ctx, body)
	if err != nil {
		return fmt.Errorf("create hub %s: %w", hub, err)
	}
	if s := resp.StatusCode(); s != http.StatusCreated && s != http.StatusConflict {
		return fmt.Errorf("create hub %s: status %d: %s", hub, s, firstLine(resp.Body))
	}
	return nil
}

// EnsurePolicyHub creates hub (kind iothub, mode policy: every device's tokens are
// signed with the hub's shared access key policyKey under policyName) or leaves it if
// it exists. transit asks for a hub whose key lives in Vault Transit.
func (a *Admin) EnsurePolicyHub(ctx context.Context, hub string, transit bool, policyName, policyKey string) error {
	mode := oapi.Policy
	body := oapi.HubCreate{Name: hub, Kind: oapi.Iothub, Hostname: hub + ".azure-devices.net", Mode: &mode,
		PolicyName: &policyName, PolicyKey: &policyKey}
	if transit {
		body.Transit = &transit
	}
	return a.ensure(ctx, body)
}

// EnsureCertificateHub creates hub as an iothub hub in mode certificate (devices get
// client certificates from POST /token/certificate) or leaves it if it exists.
func (a *Admin) EnsureCertificateHub(ctx context.Context, hub string) error {
	mode := oapi.Certificate
	return a.ensure(ctx, oapi.HubCreate{Name: hub, Kind: oapi.Iothub, Hostname: hub + ".azure-devices.net", Mode: &mode})
}

// ProvisionHS256 creates hub (if absent) and n HS256 devices named prefix000000… on it,
// and returns each device's ID and secret from the import report.
func (a *Admin) ProvisionHS256(ctx context.Context, hub, prefix string, n int) ([]Device, error) {
	if err := a.EnsureHub(ctx, hub, false); err != nil {
		return nil, err
	}
	rep, err := a.Import(ctx, n, func(i int) (oapi.DeviceCreate, error) {
		return oapi.DeviceCreate{DeviceId: fmt.Sprintf("%s%06d", prefix, i), Hub: hub, Auth: oapi.CredentialCreate{Type: oapi.Hs256}}, nil
	})
	return rep.Devices, err
}

// ProvisionES256 creates hub (if absent) and registers devs on it with their public
// keys; only public keys leave this process.
func (a *Admin) ProvisionES256(ctx context.Context, hub string, devs []KeyDevice) error {
	if err := a.EnsureHub(ctx, hub, false); err != nil {
		return err
	}
	_, err := a.Import(ctx, len(devs), func(i int) (oapi.DeviceCreate, error) {
		pub, err := devs[i].PublicKeyPEM()
		return oapi.DeviceCreate{DeviceId: devs[i].ID, Hub: hub, Auth: oapi.CredentialCreate{Type: oapi.Es256, PublicKey: &pub}}, err
	})
	return err
}

// Import registers n devices (line(i) is the i-th) through one streaming POST
// /devices/import: the NDJSON lines are written as the report streams back, so any
// number of devices takes one request. It fails unless every device was created.
func (a *Admin) Import(ctx context.Context, n int, line func(i int) (oapi.DeviceCreate, error)) (ImportReport, error) {
	pr, pw := io.Pipe()
	go func() {
		bw := bufio.NewWriterSize(pw, 64<<10)
		enc := json.NewEncoder(bw)
		for i := range n {
			d, err := line(i)
			if err == nil {
				err = enc.Encode(d)
			}
			if err != nil {
				pw.CloseWithError(err)
				return
			}
		}
		pw.CloseWithError(bw.Flush())
	}()
	defer pr.Close()
	resp, err := a.api.ImportDevicesWithBody(ctx, "application/x-ndjson", pr)
	if err != nil {
		return ImportReport{}, fmt.Errorf("import devices: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return ImportReport{}, fmt.Errorf("import devices: status %d: %s", resp.StatusCode, firstLine(b))
	}
	rep, err := ReadImportReport(resp.Body)
	if err != nil {
		return rep, fmt.Errorf("import report: %w", err)
	}
	if rep.Created != n {
		return rep, fmt.Errorf("import: %d of %d devices created (%d skipped, %d rejected; first reason: %s) — device IDs taken? use another -device-prefix",
			rep.Created, n, rep.Skipped, rep.Rejected, rep.FirstReason)
	}
	return rep, nil
}

// ImportReport is what an import report said.
type ImportReport struct {
	Created, Skipped, Rejected int
	FirstReason                string
	Summary                    bool // the summary line arrived
	// Devices are the created devices that came with an HS256 secret.
	Devices []Device
}

// reportLine is one line of an import report, or of a device file (deviceId, secret).
type reportLine struct {
	DeviceID string `json:"deviceId"`
	Secret   string `json:"secret"`
	Auth     struct {
		Secret string `json:"secret"`
	} `json:"auth"`
	Result  string `json:"result"`
	Reason  string `json:"reason"`
	Error   string `json:"error"`
	Summary *struct {
		Created, Skipped, Rejected int
	} `json:"summary"`
}

// device is the line's device if it carries a secret.
func (l reportLine) device() (Device, bool) {
	s := l.Secret
	if s == "" {
		s = l.Auth.Secret
	}
	return Device{ID: l.DeviceID, Secret: s}, l.DeviceID != "" && s != ""
}

// scanLines calls fn for every non-blank NDJSON line of r.
func scanLines(r io.Reader, fn func(reportLine) error) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		if strings.TrimSpace(sc.Text()) == "" {
			continue
		}
		var l reportLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			return fmt.Errorf("ndjson: %w", err)
		}
		if err := fn(l); err != nil {
			return err
		}
	}
	return sc.Err()
}

// ReadImportReport reads a streamed import report and counts its lines; the summary
// line must come last and agree. HS256 secrets of created devices are kept in
// Devices; any other key material in the report is read and dropped.
func ReadImportReport(r io.Reader) (ImportReport, error) {
	var t ImportReport
	err := scanLines(r, func(l reportLine) error {
		switch l.Result {
		case "created":
			t.Created++
			if d, ok := l.device(); ok {
				t.Devices = append(t.Devices, d)
			}
		case "skipped":
			t.Skipped++
		case "rejected":
			t.Rejected++
			if t.FirstReason == "" {
				t.FirstReason = l.Reason
			}
		case "summary":
			t.Summary = true
			if l.Error != "" {
				return fmt.Errorf("import stopped: %s", l.Error)
			}
			if s := l.Summary; s == nil || s.Created != t.Created || s.Rejected != t.Rejected || s.Skipped != t.Skipped {
				return errors.New("summary disagrees with the report lines")
			}
		}
		return nil
	})
	if err != nil {
		return t, err
	}
	if !t.Summary {
		return t, errors.New("report ended without a summary")
	}
	return t, nil
}

func firstLine(b []byte) string {
	s, _, _ := strings.Cut(string(b), "\n")
	return s
}
