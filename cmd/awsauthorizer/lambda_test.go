package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tokensvc/tokensvc/internal/awsauth"
	"github.com/tokensvc/tokensvc/internal/domain"
	"github.com/tokensvc/tokensvc/internal/signer"
	"github.com/tokensvc/tokensvc/internal/syncbuf"
	"github.com/tokensvc/tokensvc/internal/target"
	"github.com/tokensvc/tokensvc/internal/target/awsiot"
	"github.com/tokensvc/tokensvc/internal/testissuer"
)

// runtimeAPI is the Lambda runtime API as the provided.al2023 runtime serves it to the
// bootstrap binary: GET …/invocation/next hands out an event, POST …/response takes
// the answer.
type runtimeAPI struct {
	events    chan []byte
	responses chan []byte
}

func (r *runtimeAPI) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	switch {
	case req.Method == http.MethodGet && req.URL.Path == "/2018-06-01/runtime/invocation/next":
		select {
		case ev := <-r.events:
			w.Header().Set("Lambda-Runtime-Aws-Request-Id", "req-"+strconv.Itoa(len(ev)))
			w.Header().Set("Lambda-Runtime-Deadline-Ms", strconv.FormatInt(time.Now().Add(5*time.Second).UnixMilli(), 10))
			w.Header().Set("Lambda-Runtime-Invoked-Function-Arn", "arn:aws:lambda:eu-west-1:123456789012:function:tokensvc-authorizer")
			_, _ = w.Write(ev)
		case <-req.Context().Done():
		}
	case req.Method == http.MethodPost && strings.HasSuffix(req.URL.Path, "/response"):
		b, _ := io.ReadAll(req.Body)
		r.responses <- b
		w.WriteHeader(http.StatusAccepted)
	default:
		b, _ := io.ReadAll(req.Body)
		r.responses <- append([]byte("unexpected "+req.Method+" "+req.URL.Path+": "), b...)
		w.WriteHeader(http.StatusAccepted)
	}
}

// TestBootstrapUnderTheRuntimeAPI builds the function as the README says (-tags
// lambda.norpc) and runs it against a stand-in of the runtime API: the event JSON AWS
// IoT Core sends goes in, the authorizer's JSON answer comes out.
func TestBootstrapUnderTheRuntimeAPI(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the function")
	}
	bin := filepath.Join(t.TempDir(), "bootstrap")
	build := exec.Command("go", "build", "-tags", "lambda.norpc", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	iss := testissuer.New(t, "https://tokensvc.example.com")
	const endpoint = "a1b2c3-ats.iot.eu-west-1.amazonaws.com"
	h := domain.Hub{Name: "aws", Kind: awsiot.KindName, Hostname: endpoint,
		Settings: map[string]string{"authorizerName": `"tokensvc"`, "tokenKeyName": `"token"`}}
	if err := (awsiot.Kind{}).Normalize(&h); err != nil {
		t.Fatal(err)
	}
	m, err := awsiot.Kind{}.Mint(context.Background(), target.Signers{Issuer: iss}, h,
		target.Request{Device: domain.Device{ID: "sensor-0001"}, TTL: time.Hour, Now: time.Now(), Transport: signer.TCP})
	if err != nil {
		t.Fatal(err)
	}

	api := &runtimeAPI{events: make(chan []byte, 2), responses: make(chan []byte, 2)}
	srv := httptest.NewServer(api)
	defer srv.Close()
	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(),
		"AWS_LAMBDA_RUNTIME_API="+strings.TrimPrefix(srv.URL, "http://"),
		"TOKENSVC_ISSUER=https://tokensvc.example.com", "AWS_IOT_ENDPOINT="+endpoint,
		"TOKENSVC_ISSUER_KEYS="+string(iss.JWKS()), "TOKEN_KEY_NAME=token",
		"AWS_REGION=eu-west-1", "AWS_ACCOUNT_ID=123456789012")
	logs := &syncbuf.Buffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}()

	event := func(tok, clientID string) []byte {
		// The MQTT event as AWS IoT Core documents it.
		return []byte(`{"token":"` + tok + `","signatureVerified":true,"protocols":["tls","mqtt"],` +
			`"protocolData":{"tls":{"serverName":"` + endpoint + `"},"mqtt":{"username":"` + m.Profiles.MQTT.Username +
			`","clientId":"` + clientID + `"}},"connectionMetadata":{"id":"d0e1f2a3-0000-4000-8000-000000000000"}}`)
	}
	answer := func(ev []byte) awsauth.Response {
		t.Helper()
		api.events <- ev
		select {
		case b := <-api.responses:
			var r awsauth.Response
			if err := json.Unmarshal(b, &r); err != nil {
				t.Fatalf("response %s: %v", b, err)
			}
			return r
		case <-time.After(30 * time.Second):
			t.Fatalf("no response; function output:\n%s", logs.String())
			return awsauth.Response{}
		}
	}
	if r := answer(event(m.Token.Value, "sensor-0001")); !r.IsAuthenticated || r.PrincipalID == "" ||
		len(r.PolicyDocuments) != 1 || r.DisconnectAfterInSeconds < 3500 {
		t.Fatalf("a good token: %+v", r)
	}
	if r := answer(event(m.Token.Value, "sensor-0002")); r.IsAuthenticated {
		t.Fatalf("another client ID: %+v", r)
	}
	if strings.Contains(logs.String(), m.Token.Value[strings.LastIndexByte(m.Token.Value, '.')+1:]) {
		t.Fatalf("the token reached the function's log:\n%s", logs.String())
	}
}
