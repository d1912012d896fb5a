package bench

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/tokensvc/tokensvc/internal/cliflags"
)

// StartBaseline serves a bare handler on addr that answers every request with n bytes
// of JSON and the headers a token response carries (Content-Length included), with the
// same server timeouts as tokensvc, over TLS when tlsCfg is set. It returns the base
// URL and a stop function.
func StartBaseline(addr string, n int, tlsCfg *tls.Config) (string, func(), error) {
	body := BaselineBody(n)
	length := strconv.Itoa(len(body))
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", nil, err
	}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			h := w.Header()
			h.Set("Content-Type", "application/json")
			h.Set("Cache-Control", "no-store")
			h.Set("Content-Length", length) // as tokensvc sends its token responses
			w.Write(body)
		}),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       15 * time.Second,
		WriteTimeout:      15 * time.Second,
		IdleTimeout:       120 * time.Second,
	}
	scheme := "http://"
	if tlsCfg != nil {
		srv.TLSConfig = tlsCfg
		ln = tls.NewListener(ln, tlsCfg)
		scheme = "https://"
	}
	go srv.Serve(ln)
	return scheme + ln.Addr().String(), func() { srv.Close() }, nil
}

// StartBaselineProcess runs this binary's baseline subcommand in a child process, so
// it can be measured as a separate process like tokensvc, and returns its URL, its pid
// and a stop function that ends it and waits for it. extra are more flags of it.
func StartBaselineProcess(ctx context.Context, n int, extra ...string) (string, int, func(), error) {
	self, err := os.Executable()
	if err != nil {
		return "", 0, nil, err
	}
	cmd := exec.Command(self, append([]string{"baseline", "-bytes", strconv.Itoa(n)}, extra...)...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		return "", 0, nil, err
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return "", 0, nil, err
	}
	stop := func() {
		cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	}
	line := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		if sc.Scan() {
			line <- sc.Text()
		}
		close(line)
		io.Copy(io.Discard, out)
	}()
	select {
	case u, ok := <-line:
		if !ok {
			stop()
			return "", 0, nil, errors.New("baseline process: no URL")
		}
		return u, cmd.Process.Pid, stop, nil
	case <-time.After(10 * time.Second):
	case <-ctx.Done():
	}
	stop()
	return "", 0, nil, errors.New("baseline process: did not start")
}

// ServeBaseline is `tokenbench baseline [-addr A] [-bytes N] [-tls-cert F -tls-key F]
// [-cpuprofile F]`: the baseline handler in its own process until ctx ends; it prints
// its URL first.
func ServeBaseline(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := NewFlagSet("baseline", stderr)
	addr := fs.String("addr", "127.0.0.1:0", "loopback listen address")
	n := fs.Int("bytes", 2500, "response body size (that of a real GET /token response)")
	certFile := fs.String("tls-cert", "", "serve HTTPS with this PEM certificate (with -tls-key)")
	keyFile := fs.String("tls-key", "", "PEM private key of -tls-cert")
	profile := fs.String("cpuprofile", "", "write this process's CPU profile, from start to exit, to this file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	host, _, err := net.SplitHostPort(*addr)
	if err != nil || !cliflags.IsLoopback(host) {
		return fmt.Errorf("-addr %q: want a loopback host:port", *addr)
	}
	if *n < 0 || *n > 1<<20 {
		return errors.New("-bytes: 0 to 1 MiB")
	}
	var tlsCfg *tls.Config
	if *certFile != "" || *keyFile != "" {
		if tlsCfg, err = TLSServerConfig(*certFile, *keyFile); err != nil {
			return err
		}
	}
	if *profile != "" {
		f, err := os.Create(*profile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	base, stop, err := StartBaseline(*addr, *n, tlsCfg)
	if err != nil {
		return err
	}
	defer stop()
	fmt.Fprintln(stdout, base)
	<-ctx.Done()
	return nil
}

// BaselineBody is a JSON object of exactly n bytes (n ≥ 8), so the baseline returns no
// token material at all.
func BaselineBody(n int) []byte {
	const head, tail = `{"x":"`, `"}`
	if n < len(head)+len(tail) {
		return []byte(strings.Repeat(" ", n))
	}
	return []byte(head + strings.Repeat("x", n-len(head)-len(tail)) + tail)
}

// FreePort is `tokenbench freeport`: it prints a TCP port free on 127.0.0.1 just now,
// for scripts that start a service on one.
func FreePort(stdout io.Writer) error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer ln.Close()
	_, err = fmt.Fprintln(stdout, ln.Addr().(*net.TCPAddr).Port)
	return err
}
