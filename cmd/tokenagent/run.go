package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/tokensvc/tokensvc/internal/agent/amqplink"
	"github.com/tokensvc/tokensvc/internal/agent/backoff"
	"github.com/tokensvc/tokensvc/internal/agent/certificate"
	"github.com/tokensvc/tokensvc/internal/agent/credential"
	"github.com/tokensvc/tokensvc/internal/agent/execsink"
	"github.com/tokensvc/tokensvc/internal/agent/fetch"
	"github.com/tokensvc/tokensvc/internal/agent/filesink"
	"github.com/tokensvc/tokensvc/internal/agent/keeper"
	"github.com/tokensvc/tokensvc/internal/agent/link"
	"github.com/tokensvc/tokensvc/internal/agent/mqtt5link"
	"github.com/tokensvc/tokensvc/internal/agent/mqttlink"
	"github.com/tokensvc/tokensvc/internal/agent/persist"
	"github.com/tokensvc/tokensvc/internal/agent/socksink"
	"github.com/tokensvc/tokensvc/internal/agent/telemetry"
	"github.com/tokensvc/tokensvc/internal/agent/tlsconf"
	"github.com/tokensvc/tokensvc/internal/agent/tmpl"
	"github.com/tokensvc/tokensvc/internal/agent/token"
	"github.com/tokensvc/tokensvc/internal/cliflags"
	"github.com/tokensvc/tokensvc/internal/version"
)

var (
	_ keeper.Fetcher   = (*fetch.Client)(nil)
	_ keeper.Store     = (*persist.File)(nil)
	_ fetch.Signer     = (*credential.Credential)(nil)
	_ link.TokenSource = (*keeper.Keeper)(nil)
	_ token.Source     = (*keeper.Keeper)(nil)
)

// sink hands the current token, and every new one, to legacy software until ctx ends;
// filesink, execsink and socksink are sinks. Run returns nil when ctx ends and an error
// only when the sink cannot go on.
type sink interface {
	Run(ctx context.Context, src token.Source) error
}

var (
	_ sink = (*filesink.Sink)(nil)
	_ sink = (*execsink.Sink)(nil)
	_ sink = (*socksink.Sink)(nil)
)

// run is the whole program; main only wires signals and the process's environment and
// standard streams to it. It returns when ctx ends (nil) or a task fails.
func run(ctx context.Context, args []string, getenv func(string) string, stdin io.Reader, stdout, stderr io.Writer) error {
	cfg, err := parseConfig(args, getenv, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if errors.Is(err, cliflags.ErrVersion) {
		_, err := fmt.Fprintln(stdout, version.String("tokenagent"))
		return err
	}
	if err != nil {
		return err
	}
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("configuration: %w", err)
	}
	log := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: cfg.LogLevel}))

	cred, err := credential.Load(cfg.CredentialFile, credential.Type(cfg.CredentialType))
	if err != nil {
		return err
	}
	var roots *x509.CertPool // nil: system roots
	if cfg.CAFile != "" {
		if roots, err = tlsconf.LoadPool(cfg.CAFile); err != nil {
			return err
		}
	}
	bo := backoff.Policy{Min: cfg.BackoffMin, Max: cfg.BackoffMax}
	httpClient := &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{
			Proxy:               http.ProxyFromEnvironment,
			TLSClientConfig:     &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12},
			TLSHandshakeTimeout: 10 * time.Second,
			IdleConnTimeout:     90 * time.Second,
		},
	}
	fc, err := fetch.New(fetch.Options{
		ServiceURL: cfg.ServiceURL, HTTPClient: httpClient, DeviceID: cfg.DeviceID, Audience: cfg.Audience,
		Module: cfg.Module, TTL: cfg.TTL, Transport: cfg.Transport, Nonce: fetch.NonceMode(cfg.Nonce), Signer: cred, Logger: log,
	})
	if err != nil {
		return err
	}
	if cfg.Gateway {
		return runGateway(ctx, cfg, fc, roots, bo, log)
	}
	cs, err := newCredentialSource(cfg, fc, certificate.Options{Logger: log})
	if err != nil {
		return err
	}
	k := keeper.New(keeper.Options{
		Fetcher: cs.fetcher, Store: cs.store, Holder: &token.Holder{}, Key: cs.key,
		Backoff: bo, BootSplay: cfg.BootSplay, Logger: log,
	})

	var (
		tasks []func(context.Context) error
		sinks []sink
	)
	var stats []func() (string, any)
	tasks = append(tasks, k.Run)
	stats = append(stats, func() (string, any) { return "keeper", k.Stats() })

	if files := cs.files; len(cfg.Templates) > 0 || len(files) > 0 {
		for _, s := range cfg.Templates {
			spec, _ := ParseTemplateSpec(s)
			text, err := os.ReadFile(spec.Src)
			if err != nil {
				return fmt.Errorf("template: %w", err)
			}
			t, err := tmpl.Parse(spec.Src, string(text))
			if err != nil {
				return err
			}
			files = append(files, filesink.File{Template: t, Path: spec.Dst, Mode: spec.Mode})
		}
		fsink, err := filesink.New(filesink.Config{Files: files}, log)
		if err != nil {
			return err
		}
		sinks = append(sinks, fsink)
	}
	if cfg.Exec != "" {
		argv, _ := cfg.Command()
		var env []execsink.Env
		for _, e := range cfg.ExecEnv {
			name, text, _ := strings.Cut(e, "=")
			t, err := tmpl.Parse("exec-env "+name, text)
			if err != nil {
				return err
			}
			env = append(env, execsink.Env{Name: name, Template: t})
		}
		sup, err := execsink.New(execsink.Config{
			Command: argv, Env: env, OnChange: execsink.OnChange(cfg.ExecOnChange),
			Signal: signals[strings.TrimPrefix(strings.ToUpper(cfg.ExecSignal), "SIG")],
			Stdout: stdout, Stderr: stderr, Backoff: bo,
		}, log)
		if err != nil {
			return err
		}
		sinks = append(sinks, sup)
		stats = append(stats, func() (string, any) { return "exec", sup.Stats() })
	}
	if cfg.Socket != "" {
		mode, _ := strconv.ParseUint(cfg.SocketMode, 8, 32)
		srv, err := socksink.New(socksink.Config{Path: cfg.Socket, Mode: os.FileMode(mode)}, log)
		if err != nil {
			return err
		}
		sinks = append(sinks, srv)
	}
	for _, s := range sinks {
		tasks = append(tasks, func(ctx context.Context) error { return s.Run(ctx, k) })
	}

	var msgs chan telemetry.Message
	if cfg.Telemetry != "none" {
		msgs = make(chan telemetry.Message, 64)
		format := telemetry.Format(cfg.TelemetryFormat)
		if cfg.Telemetry == "stdin" {
			// Not a task: a read from stdin cannot be interrupted, so shutdown does not
			// wait for it.
			go func() {
				err := telemetry.ReadLines(ctx, stdin, format, msgs, log)
				if ctx.Err() == nil {
					log.Info("telemetry input ended", "error", errString(err))
				}
			}()
		} else {
			path := strings.TrimPrefix(cfg.Telemetry, "unix:")
			tasks = append(tasks, func(ctx context.Context) error { return telemetry.ServeSocket(ctx, path, format, msgs, log) })
		}
	}
	// What every protocol link takes: the token, the telemetry and where to connect.
	common := link.Common{Source: k, Messages: msgs, DialAddr: cfg.BrokerAddr, RootCAs: roots, VerifyTime: fc.VerifyTime,
		Properties: cfg.PropertyMap(), Backoff: bo, Logger: log}
	switch cfg.Link {
	case "mqtt":
		o := mqttlink.Options{
			Common:       common,
			QoS:          1,
			CleanSession: cfg.CleanSession,
		}
		var onMsg func(mqtt5link.Delivery)
		if cfg.C2D == "stdout" {
			var mu sync.Mutex
			enc := json.NewEncoder(stdout)
			write := func(topic string, payload []byte) {
				mu.Lock()
				defer mu.Unlock()
				_ = enc.Encode(map[string]string{"topic": topic, "payload": string(payload)})
			}
			o.OnC2D = func(d mqttlink.Delivery) { write(d.Topic, d.Payload) }
			onMsg = func(d mqtt5link.Delivery) { write(d.Topic, d.Payload) }
		}
		// Each token's profile picks the protocol: MQTT 5 (JWT brokers) in mqtt5link,
		// 3.1.1 (IoT Hub, AWS IoT) through mqttlink as its fallback.
		l := mqtt5link.New(mqtt5link.Options{
			Common:     common,
			OnMessage:  onMsg,
			Fallback:   mqttlink.New(o),
			QoS:        1,
			CleanStart: cfg.CleanSession,
		})
		tasks = append(tasks, l.Run)
		stats = append(stats, func() (string, any) { return "mqtt", l.Stats() })
	case "amqp":
		l := amqplink.New(amqplink.Options{
			Common: common,
			Auth:   amqplink.Auth(cfg.AMQPAuth),
		})
		tasks = append(tasks, l.Run)
		stats = append(stats, func() (string, any) { return "amqp", l.Stats() })
	}

	log.Info("starting", "device", cfg.DeviceID, "service", cfg.ServiceForLog(), "credential", string(cred.Type()),
		"link", cfg.Link, "state", cfg.StateDir, "certificate", cfg.Certificate)
	g, gctx := errgroup.WithContext(ctx)
	for _, task := range tasks {
		g.Go(func() error { return task(gctx) })
	}
	err = g.Wait()
	attrs := []any{}
	for _, s := range stats {
		name, v := s()
		attrs = append(attrs, name, v)
	}
	log.Info("stopped", attrs...)
	return err
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
