package bench

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/tokensvc/tokensvc/internal/oapi"
)

func TestReadImportReport(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    ImportReport
		wantErr bool
	}{
		{"all created", `{"line":1,"deviceId":"a","result":"created","primaryKey":"k"}
{"line":2,"deviceId":"b","result":"created"}
{"result":"summary","summary":{"created":2,"skipped":0,"rejected":0}}
`, ImportReport{Created: 2, Summary: true}, false},
		{"hs256 secrets kept", `{"line":1,"deviceId":"a","result":"created","auth":{"type":"hs256","secret":"s1"}}
{"line":2,"deviceId":"b","result":"skipped","auth":{"secret":"not-created"}}
{"result":"summary","summary":{"created":1,"skipped":1,"rejected":0}}
`, ImportReport{Created: 1, Skipped: 1, Summary: true, Devices: []Device{{"a", "s1"}}}, false},
		{"one rejected", `{"line":1,"deviceId":"a","result":"rejected","reason":"auth.publicKey: not a PEM"}
{"result":"summary","summary":{"created":0,"skipped":0,"rejected":1}}
`, ImportReport{Rejected: 1, FirstReason: "auth.publicKey: not a PEM", Summary: true}, false},
		{"no summary", `{"line":1,"deviceId":"a","result":"created"}` + "\n", ImportReport{}, true},
		{"summary disagrees", `{"line":1,"deviceId":"a","result":"created"}
{"result":"summary","summary":{"created":5}}
`, ImportReport{}, true},
		{"import stopped", `{"result":"summary","summary":{"created":0},"error":"reading the body failed"}` + "\n", ImportReport{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ReadImportReport(strings.NewReader(tt.in))
			if (err != nil) != tt.wantErr {
				t.Fatalf("got err %v, wantErr %v", err, tt.wantErr)
			}
			if !tt.wantErr && !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

// TestAdminProvisionsThroughTheOperatorAPI drives Admin against a stand-in for the
// operator API: the hub is created once (409 afterwards is fine), the devices arrive as
// one NDJSON import with the operator token, HS256 secrets come back from the report,
// ES256 devices send only public keys, and a short report is an error.
func TestAdminProvisionsThroughTheOperatorAPI(t *testing.T) {
	var mu sync.Mutex
	hubs := map[string]oapi.HubCreate{}
	var imported []oapi.DeviceCreate
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		if r.Header.Get("Authorization") != "Bearer admin-token" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		switch r.URL.Path {
		case "/hubs":
			var h oapi.HubCreate
			if err := json.NewDecoder(r.Body).Decode(&h); err != nil {
				w.WriteHeader(http.StatusBadRequest)
				return
			}
			if _, ok := hubs[h.Name]; ok {
				w.WriteHeader(http.StatusConflict)
				return
			}
			hubs[h.Name] = h
			w.WriteHeader(http.StatusCreated)
		case "/devices/import":
			if r.Header.Get("Content-Type") != "application/x-ndjson" {
				w.WriteHeader(http.StatusUnsupportedMediaType)
				return
			}
			dec := json.NewDecoder(r.Body)
			created := 0
			for {
				var d oapi.DeviceCreate
				if err := dec.Decode(&d); err != nil {
					break
				}
				imported = append(imported, d)
				if strings.HasSuffix(d.DeviceId, "taken") {
					fmt.Fprintf(w, `{"deviceId":%q,"result":"skipped"}`+"\n", d.DeviceId)
					continue
				}
				created++
				fmt.Fprintf(w, `{"deviceId":%q,"result":"created","auth":{"secret":"s-%s"}}`+"\n", d.DeviceId, d.DeviceId)
			}
			fmt.Fprintf(w, `{"result":"summary","summary":{"created":%d,"skipped":%d}}`+"\n", created, len(imported)-created)
		default:
			w.WriteHeader(http.StatusNotFound)
		}
	}))
	defer srv.Close()
	admin, err := NewAdmin(srv.URL, "admin-token", srv.Client())
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()

	if err := admin.EnsureHub(ctx, "tr", true); err != nil {
		t.Fatalf("EnsureHub: %v", err)
	}
	devs, err := admin.ProvisionHS256(ctx, "tr", "p-", 2)
	if err != nil {
		t.Fatalf("ProvisionHS256: %v", err)
	}
	if want := []Device{{"p-000000", "s-p-000000"}, {"p-000001", "s-p-000001"}}; !reflect.DeepEqual(devs, want) {
		t.Errorf("got %v, want %v", devs, want)
	}
	if h := hubs["tr"]; h.Transit == nil || !*h.Transit || h.Hostname != "tr.azure-devices.net" {
		t.Errorf("got hub %+v, want a transit iothub on tr.azure-devices.net", h)
	}

	imported = nil
	key, err := NewKeyDevice("es-1")
	if err != nil {
		t.Fatal(err)
	}
	if err := admin.ProvisionES256(ctx, "es", []KeyDevice{key}); err != nil {
		t.Fatalf("ProvisionES256: %v", err)
	}
	if len(imported) != 1 || imported[0].Auth.Type != oapi.Es256 || imported[0].Auth.PublicKey == nil ||
		!strings.Contains(*imported[0].Auth.PublicKey, "PUBLIC KEY") || strings.Contains(*imported[0].Auth.PublicKey, "PRIVATE") {
		t.Errorf("got import lines %+v, want one es256 line with a public key only", imported)
	}

	imported = nil
	key.ID = "es-taken"
	if err := admin.ProvisionES256(ctx, "es", []KeyDevice{key}); err == nil || !strings.Contains(err.Error(), "0 of 1 devices created") {
		t.Errorf("import with a taken ID: got %v, want an error counting 0 of 1 created", err)
	}
	if _, err := mustAdmin(t, srv.URL, "wrong").ProvisionHS256(ctx, "x", "q-", 1); err == nil || !strings.Contains(err.Error(), "401") {
		t.Errorf("wrong operator token: got %v, want status 401", err)
	}
}

func mustAdmin(tb testing.TB, url, token string) *Admin {
	tb.Helper()
	a, err := NewAdmin(url, token, http.DefaultClient)
	if err != nil {
		tb.Fatal(err)
	}
	return a
}
