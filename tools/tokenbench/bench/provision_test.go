package bench

import (
	"reflect"
	"strings"
	"testing"
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
