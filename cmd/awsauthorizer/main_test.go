package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/tokensvc/tokensvc/internal/awsauth"
)

func TestBuild(t *testing.T) {
	env := map[string]string{
		"TOKENSVC_ISSUER": "https://tokensvc.example.com", "AWS_IOT_ENDPOINT": "a1-ats.iot.eu-west-1.amazonaws.com",
		"TOKENSVC_ISSUER_KEYS": `{"keys":[]}`, "TOKEN_KEY_NAME": "token", "AWS_REGION": "eu-west-1",
		"AWS_ACCOUNT_ID": "123456789012",
	}
	var out bytes.Buffer
	a, err := build(context.Background(), func(k string) string { return env[k] }, &out)
	if err != nil || a == nil {
		t.Fatalf("build: %v", err)
	}
	// An event with no token is refused, and the refusal is logged as JSON.
	res, err := a.Handle(context.Background(), awsauth.Request{})
	if err != nil || res.IsAuthenticated || !strings.Contains(out.String(), `"msg":"connection refused"`) {
		t.Fatalf("got %+v %v, log %s", res, err, out.String())
	}

	delete(env, "AWS_ACCOUNT_ID")
	if _, err := build(context.Background(), func(k string) string { return env[k] }, &out); err == nil || !strings.Contains(err.Error(), "AWS_ACCOUNT_ID") {
		t.Fatalf("got %v, want an error naming AWS_ACCOUNT_ID", err)
	}
}
