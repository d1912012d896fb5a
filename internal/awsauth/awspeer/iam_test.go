package awspeer

import "testing"

func TestPolicyAllowed(t *testing.T) {
	p, err := ParsePolicies([]string{
		`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"iot:Publish","Resource":"arn:aws:iot:r:1:topic/d/a/*"},
		 {"Effect":"Allow","Action":["iot:Connect"],"Resource":["arn:aws:iot:r:1:client/a"]}]}`,
		`{"Version":"2012-10-17","Statement":{"Effect":"Deny","Action":"iot:Publish","Resource":"arn:aws:iot:r:1:topic/d/a/secret"}}`,
		`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"iot:Receive","Resource":"arn:aws:iot:r:1:topic/c/?/x"}]}`,
	})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		action, resource string
		want             bool
	}{
		{"iot:Connect", "arn:aws:iot:r:1:client/a", true},
		{"iot:Connect", "arn:aws:iot:r:1:client/ab", false},
		{"iot:Connect", "arn:aws:iot:r:1:client/b", false},
		{"iot:Publish", "arn:aws:iot:r:1:topic/d/a/t", true},
		{"iot:Publish", "arn:aws:iot:r:1:topic/d/a/t/deeper", true}, // IAM's * crosses slashes
		{"iot:Publish", "arn:aws:iot:r:1:topic/d/a/secret", false},  // Deny wins
		{"iot:Publish", "arn:aws:iot:r:1:topic/d/ab/t", false},
		{"iot:Subscribe", "arn:aws:iot:r:1:topicfilter/d/a/t", false}, // no such action allowed
		{"iot:Receive", "arn:aws:iot:r:1:topic/c/1/x", true},
		{"iot:Receive", "arn:aws:iot:r:1:topic/c/12/x", false},
	}
	for _, tt := range tests {
		if got := p.Allowed(tt.action, tt.resource); got != tt.want {
			t.Errorf("Allowed(%s, %s): got %v, want %v", tt.action, tt.resource, got, tt.want)
		}
	}
}

func TestParsePoliciesRefuses(t *testing.T) {
	for _, doc := range []string{
		`not json`,
		`{"Version":"2008-10-17","Statement":[]}`,
		`{"Version":"2012-10-17","Statement":[{"Effect":"Maybe","Action":"a","Resource":"r"}]}`,
		`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"a"}]}`,
		`{"Version":"2012-10-17","Statement":[],"Extra":1}`,
	} {
		if _, err := ParsePolicies([]string{doc}); err == nil {
			t.Errorf("accepted %s", doc)
		}
	}
}
