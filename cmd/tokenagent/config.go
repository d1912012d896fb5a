package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/tokensvc/tokensvc/internal/agent/amqplink"
	"github.com/tokensvc/tokensvc/internal/agent/certificate"
	"github.com/tokensvc/tokensvc/internal/agent/credential"
	"github.com/tokensvc/tokensvc/internal/agent/execsink"
	"github.com/tokensvc/tokensvc/internal/agent/telemetry"
	"github.com/tokensvc/tokensvc/internal/cliflags"
	"github.com/tokensvc/tokensvc/internal/domain"
)

// envPrefix prefixes every option's environment variable: -service-url is
// TOKENAGENT_SERVICE_URL.
const envPrefix = "TOKENAGENT_"

// Config is the agent's whole configuration. It is read from a file (-config), the
// environment and flags, in rising precedence, then checked with Validate.
type Config struct {
	ConfigFile string

	ServiceURL     string
	CAFile         string
	DeviceID       string
	CredentialFile string
	CredentialType string
	Audience       string
	Module         string
	TTL            time.Duration
	Transport      string
	// Nonce says when assertions carry a service nonce instead of times (fetch.NonceMode).
	Nonce      string
	StateDir   string
	BootSplay  time.Duration
	BackoffMin time.Duration
	BackoffMax time.Duration
	LogLevel   slog.Level

	Templates    []string
	Exec         string
	ExecEnv      []string
	ExecOnChange string
	ExecSignal   string
	Socket       string
	SocketMode   string

	Link            string
	BrokerAddr      string
	AMQPAuth        string
	Telemetry       string
	TelemetryFormat string
	Properties      []string
	C2D             string
	CleanSession    bool

	// Certificate asks for device certificates (hubs in mode certificate) instead of
	// tokens; CertKeyFile, CertKeyType and CertDir are that mode's (certs.go).
	Certificate bool
	CertKeyFile string
	CertKeyType string
	CertDir     string
	// Gateway mode (see gateway.go).
	Gateway           bool
	Leaves            []string
	LeavesFile        string
	GatewayMQTT       string
	GatewayMQTTCert   string
	GatewayMQTTKey    string
	GatewayUDP        string
	GatewayLine       string
	GatewayLineFormat string
	QueueLimit        int
	QueueMaxMB        int
	GatewayMemoryMB   int
	GatewayWorkers    int
}

// flagSet declares every option on c, whose current values are the defaults.
func flagSet(c *Config, out io.Writer) *cliflags.Set {
	s := cliflags.New("tokenagent", envPrefix, out)
	s.Version()
	s.String(&c.ConfigFile, "config", "configuration file: option = value lines, # comments")
	s.String(&c.ServiceURL, "service-url", "tokensvc base URL (https://…)")
	s.String(&c.CAFile, "ca-file", "PEM CA bundle trusted for tokensvc and the brokers (default: system roots)")
	s.String(&c.DeviceID, "device-id", "the device ID")
	s.String(&c.CredentialFile, "credential-file", "device credential: PEM private key (ES256/EdDSA) or the HS256 secret; mode 0600")
	s.String(&c.CredentialType, "credential-type", "auto, hs256, es256 or eddsa")
	s.String(&c.Audience, "audience", "the aud tokensvc expects in assertions")
	s.String(&c.Module, "module", "ask for a module token")
	s.Duration(&c.TTL, "ttl", "requested token lifetime (0: the hub's default; at least 60s)")
	s.String(&c.Transport, "transport", "broker transport the token's profiles describe: tcp (8883/5671) or ws (443)")
	s.String(&c.Nonce, "nonce", "when assertions carry a service nonce instead of times: auto (when the clock is unknown or wrong), always or never")
	s.String(&c.StateDir, "state-dir", "where the last good token is kept (0700/0600)")
	s.Duration(&c.BootSplay, "boot-splay", "random delay before the first fetch when no valid token was kept")
	s.Duration(&c.BackoffMin, "backoff-min", "first retry delay ceiling")
	s.Duration(&c.BackoffMax, "backoff-max", "largest retry delay")
	s.Level(&c.LogLevel, "log-level", "debug, info, warn or error")
	s.List(&c.Templates, "template", "SRC:DST[:MODE] render template file SRC to DST (mode default 0600) on every new token; repeatable")
	s.String(&c.Exec, "exec", "run this command (a JSON array, or words split on spaces) with -exec-env values in its environment")
	s.List(&c.ExecEnv, "exec-env", "NAME=TEMPLATE environment variable for the -exec child; repeatable")
	s.String(&c.ExecOnChange, "exec-on-change", "when a new token changes the child's environment: restart, signal or none")
	s.String(&c.ExecSignal, "exec-signal", "signal for -exec-on-change=signal: HUP, USR1, USR2, INT or TERM")
	s.String(&c.Socket, "socket", "serve the token on this Unix socket (GET /token, /connection-string, /token.json)")
	s.String(&c.SocketMode, "socket-mode", "file mode of -socket")
	s.String(&c.Link, "link", "use the token: none, mqtt or amqp")
	s.String(&c.BrokerAddr, "broker-addr", "dial this host:port instead of the profile's (TLS still checks the profile's host)")
	s.String(&c.AMQPAuth, "amqp-auth", "AMQP authentication: plain (SASL PLAIN) or cbs (put-token, renewed on the open connection)")
	s.String(&c.Telemetry, "telemetry", "telemetry input: none, stdin, or unix:PATH (a socket local programs write lines to)")
	s.String(&c.TelemetryFormat, "telemetry-format", "raw (a line is the body) or json ({\"body\":…,\"properties\":{…}})")
	s.List(&c.Properties, "property", "KEY=VALUE added to every message (e.g. $.ct=application/json); repeatable")
	s.String(&c.C2D, "c2d", "cloud-to-device messages (MQTT): none or stdout (JSON lines)")
	s.Bool(&c.CleanSession, "clean-session", "MQTT clean session")
	certFlags(s, c)
	s.Bool(&c.Gateway, "gateway", "field gateway mode: bridge leaf devices (-leaf, -leaves-file) to the hub under their own identities over -link")
	s.List(&c.Leaves, "leaf", "gateway mode: a leaf device ID (no local password); repeatable")
	s.String(&c.LeavesFile, "leaves-file", "gateway mode: file of leaves, one per line: ID [local MQTT password]; mode 0600 when it holds passwords")
	s.String(&c.GatewayMQTT, "gateway-mqtt", "gateway mode: local MQTT 3.1.1 broker for leaves on this host:port")
	s.String(&c.GatewayMQTTCert, "gateway-mqtt-cert", "gateway mode: PEM certificate (chain) making the local broker TLS")
	s.String(&c.GatewayMQTTKey, "gateway-mqtt-key", "gateway mode: PEM private key of -gateway-mqtt-cert")
	s.String(&c.GatewayUDP, "gateway-udp", "gateway mode: UDP intake on this host:port, one \"{leafId} {payload}\" per datagram")
	s.String(&c.GatewayLine, "gateway-line", "gateway mode: TCP line intake on this host:port, one \"{leafId} {payload}\" per line")
	s.String(&c.GatewayLineFormat, "gateway-line-format", "gateway mode: line payloads are raw or json ({\"body\":…,\"properties\":{…}})")
	s.Int(&c.QueueLimit, "queue-limit", "gateway mode: most messages kept in the on-disk queue (state-dir/queue.db); beyond it the oldest are dropped")
	s.Int(&c.QueueMaxMB, "queue-max-mb", "gateway mode: most MiB of messages kept in the queue")
	s.Int(&c.GatewayWorkers, "gateway-workers", "gateway mode: leaves sending or connecting at once (more: faster bursts, more memory)")
	s.Int(&c.GatewayMemoryMB, "gateway-memory-limit", "gateway mode: Go soft memory limit in MiB (0: none; GOMEMLIMIT, when set, wins): the collector works harder near it")
	return s
}

// defaults is the configuration before any file, environment or flag.
func defaults() Config {
	return Config{
		CredentialType:  "auto",
		Audience:        "tokensvc",
		Transport:       "tcp",
		Nonce:           "auto",
		StateDir:        "/var/lib/tokenagent",
		BootSplay:       3 * time.Second,
		BackoffMin:      time.Second,
		BackoffMax:      5 * time.Minute,
		LogLevel:        slog.LevelInfo,
		ExecOnChange:    "restart",
		ExecSignal:      "HUP",
		SocketMode:      "0600",
		Link:            "none",
		AMQPAuth:        "plain",
		Telemetry:       "none",
		TelemetryFormat: "raw",
		C2D:             "none",
		CleanSession:    true,
		CertKeyType:     string(certificate.ECDSAP256),

		GatewayLineFormat: "raw",
		QueueLimit:        100000,
		QueueMaxMB:        256,
		GatewayMemoryMB:   40,
		GatewayWorkers:    128,
	}
}

// parseConfig reads the file, the environment and args, in rising precedence. With
// -version it returns cliflags.ErrVersion.
func parseConfig(args []string, getenv func(string) string, out io.Writer) (Config, error) {
	// First pass: only to find -config (and -version, -h) before reading the file.
	probe := defaults()
	if err := flagSet(&probe, io.Discard).Parse(args, func(string) string { return "" }); err != nil {
		// Let the real pass report it, with usage where that applies.
		c := defaults()
		return Config{}, flagSet(&c, out).Parse(args, func(string) string { return "" })
	}
	path := probe.ConfigFile
	if path == "" {
		path = getenv(envPrefix + "CONFIG")
	}

	c := defaults()
	s := flagSet(&c, out)
	if path != "" {
		entries, err := readConfigFile(path)
		if err != nil {
			return Config{}, err
		}
		s.Layer()
		for _, e := range entries {
			if e.key == "config" || !s.IsOption(e.key) {
				return Config{}, fmt.Errorf("%s:%d: unknown option %q", path, e.line, e.key)
			}
			if err := s.SetOption(e.key, e.value); err != nil {
				return Config{}, fmt.Errorf("%s:%d: %s: %w", path, e.line, e.key, err)
			}
		}
	}
	if err := s.Parse(args, getenv); err != nil {
		return Config{}, err
	}
	c.ConfigFile = path
	return c, nil
}

type entry struct {
	key, value string
	line       int
}

// readConfigFile reads `option = value` lines; # starts a comment line.
func readConfigFile(path string) ([]entry, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config file: %w", err)
	}
	var out []entry
	sc := bufio.NewScanner(bytes.NewReader(b))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			return nil, fmt.Errorf("%s:%d: want option = value", path, n)
		}
		out = append(out, entry{key: strings.TrimSpace(k), value: strings.TrimSpace(v), line: n})
	}
	return out, sc.Err()
}

// TemplateSpec is a parsed -template option.
type TemplateSpec struct {
	Src, Dst string
	Mode     os.FileMode
}

// ParseTemplateSpec parses SRC:DST[:MODE].
func ParseTemplateSpec(s string) (TemplateSpec, error) {
	parts := strings.Split(s, ":")
	if len(parts) < 2 || len(parts) > 3 || parts[0] == "" || parts[1] == "" {
		return TemplateSpec{}, fmt.Errorf("template %q: want SRC:DST[:MODE]", s)
	}
	t := TemplateSpec{Src: parts[0], Dst: parts[1], Mode: 0o600}
	if len(parts) == 3 {
		m, err := strconv.ParseUint(parts[2], 8, 32)
		if err != nil || m > 0o777 {
			return TemplateSpec{}, fmt.Errorf("template %q: mode must be octal like 0640", s)
		}
		t.Mode = os.FileMode(m)
	}
	return t, nil
}

// Command splits -exec: a JSON array, or words separated by spaces.
func (c Config) Command() ([]string, error) {
	s := strings.TrimSpace(c.Exec)
	if strings.HasPrefix(s, "[") {
		var argv []string
		if err := json.Unmarshal([]byte(s), &argv); err != nil || len(argv) == 0 {
			return nil, errors.New("exec: want a JSON array of strings")
		}
		return argv, nil
	}
	return strings.Fields(s), nil
}

var signals = map[string]syscall.Signal{
	"HUP": syscall.SIGHUP, "USR1": syscall.SIGUSR1, "USR2": syscall.SIGUSR2, "INT": syscall.SIGINT, "TERM": syscall.SIGTERM,
}

// Validate checks the configuration before anything is built.
func (c Config) Validate() error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }

	switch u, err := url.Parse(c.ServiceURL); {
	case c.ServiceURL == "":
		bad("service-url is required")
	case err != nil || u.Host == "":
		bad("service-url is not a URL") // not quoted: it may hold a password
	case u.Scheme == "https":
	case u.Scheme == "http" && cliflags.IsLoopback(u.Hostname()):
	default:
		bad("service-url must be https:// (http:// only on loopback): assertions and tokens are credentials")
	}
	if c.DeviceID == "" {
		bad("device-id is required")
	} else if !domain.ValidID(c.DeviceID) {
		bad("device-id %q is not a valid IoT Hub device ID", c.DeviceID)
	}
	if c.Module != "" && !domain.ValidID(c.Module) {
		bad("module %q is not a valid IoT Hub module ID", c.Module)
	}
	if c.CredentialFile == "" {
		bad("credential-file is required")
	}
	switch credential.Type(c.CredentialType) {
	case credential.Auto, credential.HS256, credential.ES256, credential.EdDSA:
	default:
		bad("credential-type must be auto, hs256, es256 or eddsa")
	}
	if c.Audience == "" {
		bad("audience must not be empty")
	}
	if c.TTL != 0 && (c.TTL < time.Minute || c.TTL%time.Second != 0) && !c.Certificate {
		bad("ttl must be 0 or whole seconds of at least 60s")
	}
	if c.Transport != "tcp" && c.Transport != "ws" {
		bad("transport must be tcp or ws")
	}
	if c.Nonce != "auto" && c.Nonce != "always" && c.Nonce != "never" {
		bad("nonce must be auto, always or never")
	}
	if c.StateDir == "" {
		bad("state-dir is required")
	}
	if c.BackoffMin <= 0 || c.BackoffMax < c.BackoffMin {
		bad("backoff-min must be positive and backoff-max at least backoff-min")
	}
	if c.BootSplay < 0 {
		bad("boot-splay must not be negative")
	}
	for _, t := range c.Templates {
		if _, err := ParseTemplateSpec(t); err != nil {
			errs = append(errs, err)
		}
	}
	if c.Exec != "" {
		if argv, err := c.Command(); err != nil {
			errs = append(errs, err)
		} else if len(argv) == 0 || argv[0] == "" {
			bad("exec: empty command")
		}
	}
	for _, e := range c.ExecEnv {
		if c.Exec == "" {
			bad("exec-env needs exec")
			break
		}
		name, _, ok := strings.Cut(e, "=")
		if !ok || name == "" || strings.ContainsAny(name, " \t") {
			bad("exec-env %q: want NAME=TEMPLATE", name)
		}
	}
	switch execsink.OnChange(c.ExecOnChange) {
	case execsink.Restart, execsink.Signal, execsink.Nothing:
	default:
		bad("exec-on-change must be restart, signal or none")
	}
	if _, ok := signals[strings.TrimPrefix(strings.ToUpper(c.ExecSignal), "SIG")]; !ok {
		bad("exec-signal must be HUP, USR1, USR2, INT or TERM")
	}
	if m, err := strconv.ParseUint(c.SocketMode, 8, 32); err != nil || m > 0o777 {
		bad("socket-mode must be octal like 0600")
	}
	switch c.Link {
	case "none", "mqtt", "amqp":
	default:
		bad("link must be none, mqtt or amqp")
	}
	switch amqplink.Auth(c.AMQPAuth) {
	case amqplink.Plain, amqplink.CBS:
	default:
		bad("amqp-auth must be plain or cbs")
	}
	if c.BrokerAddr != "" {
		if _, _, err := net.SplitHostPort(c.BrokerAddr); err != nil {
			bad("broker-addr must be host:port")
		}
	}
	switch {
	case c.Telemetry == "none", c.Telemetry == "stdin":
	case strings.HasPrefix(c.Telemetry, "unix:") && filepath.IsAbs(strings.TrimPrefix(c.Telemetry, "unix:")):
	default:
		bad("telemetry must be none, stdin or unix:/absolute/path")
	}
	if c.Telemetry != "none" && c.Link == "none" {
		bad("telemetry needs link mqtt or amqp")
	}
	if f := telemetry.Format(c.TelemetryFormat); f != telemetry.Raw && f != telemetry.JSON {
		bad("telemetry-format must be raw or json")
	}
	for _, p := range c.Properties {
		if k, _, ok := strings.Cut(p, "="); !ok || k == "" {
			bad("property %q: want KEY=VALUE", p)
		}
	}
	if c.Gateway {
		errs = append(errs, c.validateGateway()...)
	}
	switch c.C2D {
	case "none":
	case "stdout":
		if c.Link != "mqtt" {
			bad("c2d needs link mqtt")
		}
	default:
		bad("c2d must be none or stdout")
	}
	errs = append(errs, c.validateCert()...)
	return errors.Join(errs...)
}

// ServiceForLog is the service URL with any password in it masked (as net/http masks it
// in its errors): the URL may carry credentials for a proxy in front of tokensvc.
func (c Config) ServiceForLog() string {
	u, err := url.Parse(c.ServiceURL)
	if err != nil {
		return "(unparsable)"
	}
	return u.Redacted()
}

// PropertyMap returns -property values as a map.
func (c Config) PropertyMap() map[string]string {
	m := make(map[string]string, len(c.Properties))
	for _, p := range c.Properties {
		k, v, _ := strings.Cut(p, "=")
		m[k] = v
	}
	return m
}
