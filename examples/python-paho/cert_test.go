package pythonpaho

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/tokensvc/tokensvc/internal/agent/certificate"
	"github.com/tokensvc/tokensvc/internal/agent/testpeer"
	"github.com/tokensvc/tokensvc/internal/agent/testpeer/certpeer"
	"github.com/tokensvc/tokensvc/internal/oapi"
	"github.com/tokensvc/tokensvc/internal/testca"
)

// certFiles are what aws_iot_cert.py is given: the device's certificate (then its
// chain) and key, the broker's root CA, and the mqtt profile.
type certFiles struct {
	Cert, Key, CA, Profile string
}

// runCertClient runs aws_iot_cert.py with files against the broker at addr, sending
// messages messages.
func runCertClient(t *testing.T, py string, f certFiles, addr string, messages int) ([]byte, error) {
	t.Helper()
	cmd := exec.Command(py, "aws_iot_cert.py", f.Profile)
	cmd.Env = append(os.Environ(), "CERT_FILE="+f.Cert, "KEY_FILE="+f.Key, "CA_FILE="+f.CA,
		"BROKER_ADDR="+addr, "MESSAGES="+strconv.Itoa(messages))
	return cmd.CombinedOutput()
}

func writeJSON(t *testing.T, path string, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestCertClientWithTestCAFiles runs the certificate example on files the test CA
// issued (the service-issued run is TestCertClientWithAgentFiles): the stand-in takes
// it only with ALPN x-amzn-mqtt-ca and a certificate from the hub's CA.
func TestCertClientWithTestCAFiles(t *testing.T) {
	py := python(t)
	const host, device = "a1b2c3-ats.iot.eu-west-1.amazonaws.com", "sensor-0001"
	server, hubCA := testca.NewCA(t, "Amazon Root CA stand-in"), testca.NewCA(t, "hub CA")
	b := certpeer.Start(t, certpeer.Options{
		Cert:  server.Issue(t, testca.Spec{CommonName: host, Hosts: []string{host}}).TLS(),
		Roots: testca.Pool(hubCA), ALPN: []string{"x-amzn-mqtt-ca"},
	})
	dir := t.TempDir()
	dev := hubCA.Issue(t, testca.Spec{CommonName: device})
	alpn := []string{"x-amzn-mqtt-ca"}
	profile := oapi.MqttProfile{Host: host, Port: 443, Alpn: &alpn, ClientId: device, ProtocolVersion: "3.1.1",
		Transport: "tcp", Url: "mqtts://" + host + ":443", Tls: &oapi.TlsSettings{ServerName: host},
		Topics: oapi.MqttTopics{Publish: "devices/" + device + "/telemetry", Subscribe: []string{}}}
	files := certFiles{
		Cert: dev.WriteCert(t, filepath.Join(dir, "device.crt")), Key: dev.WriteKey(t, filepath.Join(dir, "device.key")),
		CA: server.WriteCert(t, filepath.Join(dir, "root.pem")), Profile: writeJSON(t, filepath.Join(dir, "mqtt.json"), profile),
	}
	out, err := runCertClient(t, py, files, b.Addr, 3)
	if err != nil {
		t.Fatalf("aws_iot_cert.py: %v\n%s\nstand-in: %+v", err, out, b.Stats())
	}
	t.Logf("%s", out)
	if pubs := b.Published(); len(pubs) != 3 || pubs[0].ClientID != device || pubs[0].Topic != profile.Topics.Publish {
		t.Fatalf("stand-in got %+v, want 3 messages on %s", pubs, profile.Topics.Publish)
	}

	// Without the profile's ALPN, and with a certificate from another CA, it is turned away.
	noALPN := profile
	noALPN.Alpn = nil
	bad := files
	bad.Profile = writeJSON(t, filepath.Join(dir, "noalpn.json"), noALPN)
	if out, err := runCertClient(t, py, bad, b.Addr, 1); err == nil {
		t.Fatalf("connected without ALPN:\n%s", out)
	}
	foreign := testca.NewCA(t, "someone else").Issue(t, testca.Spec{CommonName: device})
	bad = files
	bad.Cert, bad.Key = foreign.WriteCert(t, filepath.Join(dir, "f.crt")), foreign.WriteKey(t, filepath.Join(dir, "f.key"))
	if out, err := runCertClient(t, py, bad, b.Addr, 1); err == nil {
		t.Fatalf("connected with a foreign certificate:\n%s", out)
	}
	b.Await(t, func(s certpeer.Stats) bool {
		return s.Accepted == 1 && s.Refused[certpeer.RefusedALPN] == 1 && s.Refused[certpeer.RefusedUnknownCA] == 1
	})
}

// TestCertClientWithAgentFiles is the example as it runs on a device: the agent's
// certificate mode (its key made on the device, a CSR to the real service's POST
// /token/certificate for an awsiot hub in mode certificate, the cert-dir files written
// by its file sink) leaves device.crt, device.key and mqtt.json; the Python program,
// given only those and the broker's root CA, connects to the AWS IoT Core certificate
// stand-in with ALPN x-amzn-mqtt-ca and publishes on its topic.
func TestCertClientWithAgentFiles(t *testing.T) {
	py := python(t)
	f := testpeer.NewCertFixture(t, "sensor-0002", 5*time.Minute)
	dir := t.TempDir()
	cf := f.Certificates(t, dir)
	tok, err := cf.Fetch(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	sink := testpeer.CertDirSink(t, dir)
	if err := sink.Write(tok); err != nil {
		t.Fatal(err)
	}
	out, err := runCertClient(t, py, certFiles{
		Cert: filepath.Join(dir, certificate.ChainFile), Key: certificate.KeyFileIn(dir),
		CA: f.CAFile, Profile: filepath.Join(dir, certificate.MQTTFile),
	}, f.Broker.Addr, 3)
	if err != nil {
		t.Fatalf("aws_iot_cert.py: %v\n%s\nstand-in: %+v", err, out, f.Broker.Stats())
	}
	t.Logf("%s", out)
	pubs, sess := f.Broker.Published(), f.Broker.Sessions()
	if len(pubs) != 3 || pubs[0].ClientID != f.DeviceID || pubs[0].Topic != "devices/"+f.DeviceID+"/telemetry" {
		t.Fatalf("stand-in got %+v, want 3 messages on the device's topic", pubs)
	}
	if len(sess) != 1 || sess[0].Serial != tok.Certificate.Serial {
		t.Fatalf("sessions %+v, want one with the service's certificate %s", sess, tok.Certificate.Serial)
	}
}
