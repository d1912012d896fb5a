package httpapi_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tokensvc/tokensvc/internal/httpapi"
	"github.com/tokensvc/tokensvc/internal/oapi"
	"github.com/tokensvc/tokensvc/internal/registry/devicefile"
)

type reportLine struct {
	Line         int    `json:"line"`
	DeviceID     string `json:"deviceId"`
	Result       string `json:"result"`
	Reason       string `json:"reason"`
	PrimaryKey   string `json:"primaryKey"`
	SecondaryKey string `json:"secondaryKey"`
	Auth         *struct {
		Type   string `json:"type"`
		Secret string `json:"secret"`
	} `json:"auth"`
	Summary *struct{ Created, Skipped, Rejected int } `json:"summary"`
	Error   string                                    `json:"error"`
}

func (e *env) mustImport(contentType, body string) []reportLine {
	e.t.Helper()
	resp, err := e.admin.ImportDevicesWithBodyWithResponse(e.t.Context(), contentType, strings.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	if resp.StatusCode() != 200 {
		e.t.Fatalf("import: got %d %s, want 200", resp.StatusCode(), resp.Body)
	}
	if got := resp.HTTPResponse.Header.Get("Cache-Control"); got != "no-store" {
		e.t.Errorf("Cache-Control: got %q, want no-store", got)
	}
	var out []reportLine
	sc := bufio.NewScanner(bytes.NewReader(resp.Body))
	for sc.Scan() {
		var l reportLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			e.t.Fatalf("report line %q: %v", sc.Text(), err)
		}
		out = append(out, l)
	}
	if len(out) == 0 || out[len(out)-1].Summary == nil {
		e.t.Fatalf("report has no summary line: %s", resp.Body)
	}
	return out
}

func results(lines []reportLine) string {
	var b strings.Builder
	for _, l := range lines[:len(lines)-1] {
		b.WriteString(l.DeviceID + ":" + l.Result + " ")
	}
	return strings.TrimSpace(b.String())
}

const importKey1, importKey2 = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=", "HxoeHRwbGhkYFxYVFBMSERAPDg0MCwoJCAcGBQQDAgE="

func TestImportNDJSONIsIdempotent(t *testing.T) {
	e := mustEnv(t)
	e.mustHub(oapi.HubCreate{Name: "main", Kind: oapi.Iothub, Hostname: hubHost})
	e.mustHub(oapi.HubCreate{Name: "other", Kind: oapi.Iothub, Hostname: hubHost})
	e.mustDevice(oapi.DeviceCreate{DeviceId: "existing", Hub: "other", Auth: oapi.CredentialCreate{Type: oapi.Hs256}})
	_, edPub := mustEdKey(t)
	edLine, _ := json.Marshal(oapi.DeviceCreate{DeviceId: "ed-1", Hub: "main", Auth: oapi.CredentialCreate{Type: oapi.Eddsa, PublicKey: &edPub}, PrimaryKey: ptr(importKey1), SecondaryKey: ptr(importKey2)})
	file := strings.Join([]string{
		`{"deviceId":"hs-1","hub":"main","auth":{"type":"hs256"},"modules":[{"moduleId":"m"}]}`,
		string(edLine),
		``,
		`{"deviceId":"existing","hub":"main","auth":{"type":"hs256"}}`,
		`{"deviceId":"no-hub","hub":"nowhere","auth":{"type":"hs256"}}`,
		`{"deviceId":"bad-key","hub":"main","auth":{"type":"hs256"},"primaryKey":"not base64!"}`,
		`{"deviceId":"dup","deviceId":"dup2","hub":"main","auth":{"type":"hs256"}}`,
		`{"deviceId":"extra","hub":"main","auth":{"type":"hs256"},"colour":"red"}`,
		`{"deviceId":"a/b","hub":"main","auth":{"type":"hs256"}}`,
		`not json`,
		`{"deviceId":"last","hub":"main","auth":{"type":"hs256"}}`,
	}, "\n")

	first := e.mustImport("application/x-ndjson", file)
	if got, want := results(first), "hs-1:created ed-1:created existing:rejected no-hub:rejected bad-key:rejected :rejected extra:rejected :rejected :rejected last:created"; got != want {
		t.Fatalf("first run: got %s, want %s", got, want)
	}
	if s := first[len(first)-1].Summary; s.Created != 3 || s.Skipped != 0 || s.Rejected != 7 {
		t.Errorf("summary: got %+v, want 3 created, 7 rejected", *s)
	}
	if l := first[0]; l.Line != 1 || l.Auth == nil || l.Auth.Secret == "" || l.PrimaryKey == "" {
		t.Errorf("created line: got %+v, want line 1 with the generated secret and keys", l)
	}
	if l := first[2]; l.Line != 4 || !strings.Contains(l.Reason, "different hub") {
		t.Errorf("conflicting line: got %+v, want line 4 rejected for its hub", l)
	}
	if strings.Contains(e.logBuf.String(), first[0].Auth.Secret) || strings.Contains(e.logBuf.String(), first[0].PrimaryKey) {
		t.Errorf("an imported secret reached the log")
	}
	// A created device works at once.
	if resp := e.getToken(e.hs256("hs-1", first[0].Auth.Secret), nil); resp.StatusCode() != 200 {
		t.Errorf("token for an imported device: got %d %s", resp.StatusCode(), resp.Body)
	}

	before := e.snapshot()
	second := e.mustImport("application/x-ndjson", file)
	if got, want := results(second), "hs-1:skipped ed-1:skipped existing:rejected no-hub:rejected bad-key:rejected :rejected extra:rejected :rejected :rejected last:skipped"; got != want {
		t.Errorf("second run: got %s, want %s", got, want)
	}
	for _, l := range second {
		if l.Auth != nil || l.PrimaryKey != "" {
			t.Errorf("a skipped line returned secrets: %+v", l)
		}
	}
	if after := e.snapshot(); after != before {
		t.Errorf("re-running the import changed the store")
	}

	// The same device with different keys conflicts.
	changed := strings.Replace(string(edLine), importKey2, importKey1, 1)
	if got := results(e.mustImport("application/x-ndjson", changed)); got != "ed-1:rejected" {
		t.Errorf("changed keys: got %s, want ed-1:rejected", got)
	}
}

func TestImportCSV(t *testing.T) {
	e := mustEnv(t)
	e.mustHub(oapi.HubCreate{Name: "main", Kind: oapi.Iothub, Hostname: hubHost})
	_, ecPub := mustECKey(t)
	file := "\ufeffid,hub,authType,publicKey,primaryKey,secondaryKey,status\r\n" +
		"csv-1,main,hs256,,,,enabled\r\n" +
		"csv-2,main,es256,\"" + ecPub + "\"," + importKey1 + "," + importKey2 + ",disabled\r\n" +
		"csv-3,main,rsa,,,,enabled\r\n" +
		"csv-4,main,hs256,,,,maybe\r\n" +
		"csv-5,main\r\n"
	first := e.mustImport("text/csv; charset=utf-8", file)
	if got, want := results(first), "csv-1:created csv-2:created csv-3:rejected csv-4:rejected :rejected"; got != want {
		t.Fatalf("first run: got %s, want %s\n%+v", got, want, first)
	}
	if first[1].Line != 3 || first[1].PrimaryKey != importKey1 {
		t.Errorf("csv-2: got %+v, want line 3 with the supplied keys", first[1])
	}
	got, err := e.admin.GetDeviceWithResponse(t.Context(), "csv-2")
	if err != nil || got.JSON200 == nil || !got.JSON200.Disabled || got.JSON200.Auth.Type != oapi.Es256 {
		t.Fatalf("csv-2 after import: got %v %s, want a disabled es256 device", err, got.Body)
	}
	if got := results(e.mustImport("text/csv", file)); got != "csv-1:skipped csv-2:skipped csv-3:rejected csv-4:rejected :rejected" {
		t.Errorf("second run: got %s", got)
	}
}

func TestImportCSVCertificateDevices(t *testing.T) {
	e := mustEnv(t)
	e.mustHub(oapi.HubCreate{Name: "main", Kind: oapi.Iothub, Hostname: hubHost})
	fp, other := strings.Repeat("ab", 32), strings.Repeat("cd", 32)
	file := "deviceId,hub,authType,certFingerprint\n" +
		"pin-1,main,x509," + fp + "\n" +
		"ca-1,main,x509-ca,\n" +
		"pin-2,main,x509,\n"
	if got, want := results(e.mustImport("text/csv", file)), "pin-1:created ca-1:created pin-2:rejected"; got != want {
		t.Fatalf("first run: got %s, want %s", got, want)
	}
	got, err := e.admin.GetDeviceWithResponse(t.Context(), "pin-1")
	if err != nil || got.JSON200 == nil || deref(got.JSON200.Auth.CertFingerprint) != fp {
		t.Fatalf("pin-1 after import: got %v %s, want fingerprint %s", err, got.Body, fp)
	}
	again := strings.Replace(file, fp, other, 1)
	if got, want := results(e.mustImport("text/csv", again)), "pin-1:rejected ca-1:skipped pin-2:rejected"; got != want {
		t.Errorf("another fingerprint: got %s, want %s", got, want)
	}
}

func TestImportStreamsPastTheBodyLimit(t *testing.T) {
	e := mustEnv(t)
	e.mustHub(oapi.HubCreate{Name: "main", Kind: oapi.Iothub, Hostname: hubHost})
	var b strings.Builder
	n := 0
	for b.Len() <= httpapi.MaxBodyBytes+1000 {
		b.WriteString(`{"deviceId":"x` + strings.Repeat("y", 100) + `","hub":"main"}` + "\n") // no auth: rejected
		n++
	}
	b.WriteString(`{"deviceId":"` + strings.Repeat("z", devicefile.MaxLineBytes) + `"}` + "\n")
	b.WriteString(`{"deviceId":"after-long-line","hub":"main","auth":{"type":"hs256"}}` + "\n")
	lines := e.mustImport("application/x-ndjson", b.String())
	s := lines[len(lines)-1].Summary
	if s.Rejected != n+1 || s.Created != 1 || lines[len(lines)-1].Error != "" {
		t.Errorf("summary: got %+v %q, want %d rejected and 1 created", *s, lines[len(lines)-1].Error, n+1)
	}
	if l := lines[n]; l.Line != n+1 || !strings.Contains(l.Reason, "longer than") {
		t.Errorf("long line: got %+v, want line %d rejected as too long", l, n+1)
	}
}

func TestImportBadInput(t *testing.T) {
	e := mustEnv(t)
	e.mustHub(oapi.HubCreate{Name: "main", Kind: oapi.Iothub, Hostname: hubHost})
	line := `{"deviceId":"d1","hub":"main","auth":{"type":"hs256"}}`
	before := e.snapshot()
	tests := []struct {
		name, auth, contentType, body string
		want                          int
	}{
		{"no credential", "", "application/x-ndjson", line, 401},
		{"wrong credential", "nope", "application/x-ndjson", line, 401},
		{"no content type", adminToken, "", line, 415},
		{"JSON, not NDJSON", adminToken, "application/json", line, 415},
		{"plain text", adminToken, "text/plain", line, 415},
		{"latin-1", adminToken, "text/csv; charset=latin1", "deviceId,hub,authType\n", 415},
		{"empty CSV", adminToken, "text/csv", "", 400},
		{"CSV unknown column", adminToken, "text/csv", "deviceId,hub,authType,colour\nd1,main,hs256,red\n", 400},
		{"CSV without hub", adminToken, "text/csv", "deviceId,authType\nd1,hs256\n", 400},
		{"CSV column twice", adminToken, "text/csv", "deviceId,id,hub,authType\nd1,d1,main,hs256\n", 400},
		{"GET", adminToken, "", "", 405},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			method := http.MethodPost
			if tt.name == "GET" {
				method = http.MethodGet
			}
			resp, body := e.rawRequest(method, "/devices/import", tt.auth, tt.contentType, strings.NewReader(tt.body))
			if resp.StatusCode != tt.want || resp.Header.Get("Content-Type") != "application/problem+json" {
				t.Errorf("got %d %q %s, want %d problem+json", resp.StatusCode, resp.Header.Get("Content-Type"), body, tt.want)
			}
		})
	}
	if after := e.snapshot(); after != before {
		t.Errorf("refused imports changed the store")
	}
}

// streamingImport is an NDJSON import request whose body the test writes as it goes.
func (e *env) streamingImport(body io.Reader) *http.Request {
	e.t.Helper()
	req, err := http.NewRequestWithContext(e.t.Context(), http.MethodPost, e.url+"/devices/import", body)
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+adminToken)
	req.Header.Set("Content-Type", "application/x-ndjson")
	return req
}

// TestImportStreams proves the report streams while the body is still being sent: the
// client writes the next line only after it has read the report of the previous one.
func TestImportStreams(t *testing.T) {
	e := mustEnv(t)
	e.mustHub(oapi.HubCreate{Name: "main", Kind: oapi.Iothub, Hostname: hubHost})
	pr, pw := io.Pipe()
	req := e.streamingImport(pr)
	type result struct {
		resp *http.Response
		err  error
	}
	done := make(chan result, 1)
	go func() {
		resp, err := http.DefaultClient.Do(req)
		done <- result{resp, err}
	}()
	write := func(id string) {
		if _, err := io.WriteString(pw, `{"deviceId":"`+id+`","hub":"main","auth":{"type":"hs256"}}`+"\n"); err != nil {
			t.Fatal(err)
		}
	}
	write("s-1")
	var res result
	select {
	case res = <-done:
	case <-time.After(10 * time.Second):
		pw.Close()
		t.Fatal("no response while the body is still open: the import does not stream")
	}
	if res.err != nil {
		t.Fatal(res.err)
	}
	defer res.resp.Body.Close()
	rd := bufio.NewReader(res.resp.Body)
	for i, id := range []string{"s-1", "s-2", "s-3"} {
		if i > 0 {
			write(id)
		}
		line, err := rd.ReadString('\n')
		if err != nil || !strings.Contains(line, `"deviceId":"`+id+`","result":"created"`) {
			t.Fatalf("report for %s: got %q %v", id, line, err)
		}
	}
	pw.Close()
	if rest, _ := io.ReadAll(rd); !strings.Contains(string(rest), `"created":3`) {
		t.Errorf("summary: got %q", rest)
	}
}

func TestImportCSVRecordTooLong(t *testing.T) {
	e := mustEnv(t)
	e.mustHub(oapi.HubCreate{Name: "main", Kind: oapi.Iothub, Hostname: hubHost})
	body := "deviceId,hub,authType,publicKey\nc-1,main,hs256,\nc-2,main,eddsa,\"" + strings.Repeat("k\n", devicefile.MaxLineBytes) + "\"\nc-3,main,hs256,\n"
	lines := e.mustImport("text/csv", body)
	last := lines[len(lines)-1]
	if results(lines) != "c-1:created" || !strings.Contains(last.Error, "longer than") || last.Summary.Created != 1 {
		t.Errorf("got %s, summary %+v %q; want c-1 created and the import stopped at the long record", results(lines), *last.Summary, last.Error)
	}
}
