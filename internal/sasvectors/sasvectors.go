// Package sasvectors loads testdata/sas-vectors.json, the SAS known-answer vectors
// (computed with the reference algorithm and cross-checked against Microsoft's
// azure-iot-common), for every test that must reproduce them: the local signer and
// Vault Transit signing alike.
package sasvectors

import (
	"encoding/json"
	"os"
	"path/filepath"
	"runtime"
	"testing"
)

// Vector is one known answer.
type Vector struct {
	Kind           string  `json:"kind"`
	Host           string  `json:"host"`
	DeviceID       string  `json:"deviceId"`
	ModuleID       string  `json:"moduleId"`
	IDScope        string  `json:"idScope"`
	RegistrationID string  `json:"registrationId"`
	GroupKey       string  `json:"groupKey"`
	DerivedKey     string  `json:"derivedKey"`
	Key            string  `json:"key"`
	KeyEncoding    string  `json:"keyEncoding"`
	PolicyName     *string `json:"policyName"`
	Resource       string  `json:"resource"`
	Expiry         int64   `json:"expiry"`
	Signature      string  `json:"signature"`
	Token          string  `json:"token"`
}

// Policy is the vector's skn, empty when it has none.
func (v Vector) Policy() string {
	if v.PolicyName == nil {
		return ""
	}
	return *v.PolicyName
}

// Load reads the repository's vectors; it fails tb if there are none.
func Load(tb testing.TB) []Vector {
	tb.Helper()
	_, here, _, _ := runtime.Caller(0)
	b, err := os.ReadFile(filepath.Join(filepath.Dir(here), "..", "..", "testdata", "sas-vectors.json"))
	if err != nil {
		tb.Fatal(err)
	}
	var doc struct{ Vectors []Vector }
	if err := json.Unmarshal(b, &doc); err != nil {
		tb.Fatal(err)
	}
	if len(doc.Vectors) == 0 {
		tb.Fatal("no vectors in testdata/sas-vectors.json")
	}
	return doc.Vectors
}
