// Package execsink runs a child process with token values in its environment, as Vault
// Agent's exec mode does, for software that reads credentials only at start: when a new
// token changes the rendered environment, the child is restarted (or sent a signal, for
// a program that re-reads files written by the file sink). A child that exits on its
// own is started again after a backoff.
package execsink

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"slices"
	"syscall"
	"text/template"
	"time"

	"github.com/tokensvc/tokensvc/internal/agent/backoff"
	"github.com/tokensvc/tokensvc/internal/agent/counter"
	"github.com/tokensvc/tokensvc/internal/agent/tmpl"
	"github.com/tokensvc/tokensvc/internal/agent/token"
)

// OnChange says what happens to the child when the token changes.
type OnChange string

// Reactions to a new token.
const (
	Restart OnChange = "restart"
	Signal  OnChange = "signal"
	Nothing OnChange = "none"
)

// Env is one environment variable rendered from a template.
type Env struct {
	Name     string
	Template *template.Template
}

// Config configures a Sink.
type Config struct {
	// Command is the program and its arguments.
	Command []string
	Env     []Env
	// OnChange defaults to Restart.
	OnChange OnChange
	// Signal is sent for OnChange Signal (default SIGHUP).
	Signal syscall.Signal
	// StopTimeout is how long the child gets after SIGTERM before SIGKILL (default 10 s).
	StopTimeout time.Duration
	// Stdout and Stderr receive the child's output (default: discarded).
	Stdout, Stderr io.Writer
	Backoff        backoff.Policy
}

// Stats count what a Sink did.
type Stats struct {
	// Starts counts child starts; Restarts those made for a new token; Signals the
	// signals sent for a new token; Exits the exits the child made on its own.
	Starts, Restarts, Signals, Exits int
}

// Sink runs one child process.
type Sink struct {
	o   Config
	log *slog.Logger

	stats counter.Set[Stats]
}

// New returns a Sink for o; log nil means slog.Default().
func New(o Config, log *slog.Logger) (*Sink, error) {
	if len(o.Command) == 0 {
		return nil, errors.New("exec: no command")
	}
	if o.OnChange == "" {
		o.OnChange = Restart
	}
	if o.Signal == 0 {
		o.Signal = syscall.SIGHUP
	}
	if o.StopTimeout == 0 {
		o.StopTimeout = 10 * time.Second
	}
	if log == nil {
		log = slog.Default()
	}
	if o.Backoff.Min == 0 {
		o.Backoff = backoff.Policy{Min: time.Second, Max: time.Minute}
	}
	return &Sink{o: o, log: log.With("child", o.Command[0])}, nil
}

// Stats returns a snapshot of the counters.
func (s *Sink) Stats() Stats { return s.stats.Snapshot() }

type child struct {
	cmd  *exec.Cmd
	done chan error
}

// Run starts the child once a token is there and supervises it until ctx ends, then
// stops it. It returns an error only if the environment cannot be rendered.
func (s *Sink) Run(ctx context.Context, src token.Source) error {
	var (
		env     []string
		c       *child
		exits   int
		restart <-chan time.Time
	)
	defer func() {
		if c != nil {
			s.stop(c)
		}
	}()
	for {
		t, changed, ok := src.Current()
		if ok {
			next, err := s.render(t)
			if err != nil {
				return err
			}
			switch {
			case c == nil && restart == nil:
				c = s.start(next)
			case slices.Equal(next, env):
			case c != nil && s.o.OnChange == Restart:
				s.log.Info("new token; restarting the child")
				s.stop(c)
				c = s.start(next)
				s.stats.Update(func(st *Stats) { st.Restarts++ })
			case c != nil && s.o.OnChange == Signal:
				s.log.Info("new token; signalling the child", "signal", s.o.Signal.String())
				_ = c.cmd.Process.Signal(s.o.Signal)
				s.stats.Update(func(st *Stats) { st.Signals++ })
			}
			env = next
		}
		var exited <-chan error
		if c != nil {
			exited = c.done
		}
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
		case err := <-exited:
			exits++
			s.stats.Update(func(st *Stats) { st.Exits++ })
			d := s.o.Backoff.Delay(exits, 0)
			s.log.Warn("child exited; starting it again", "status", exitStatus(err), "in", d.Round(time.Millisecond).String())
			c = nil
			restart = time.After(d)
		case <-restart:
			restart = nil
			c = s.start(env)
		}
	}
}

func (s *Sink) render(t token.Token) ([]string, error) {
	out := make([]string, 0, len(s.o.Env))
	for _, e := range s.o.Env {
		b, err := tmpl.RenderToken(e.Template, t)
		if err != nil {
			return nil, fmt.Errorf("exec environment %s: %w", e.Name, err)
		}
		out = append(out, e.Name+"="+string(b))
	}
	return out, nil
}

func (s *Sink) start(env []string) *child {
	cmd := exec.Command(s.o.Command[0], s.o.Command[1:]...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = s.o.Stdout, s.o.Stderr
	// Its own process group, so that stop reaches what a wrapper shell started too.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	c := &child{cmd: cmd, done: make(chan error, 1)}
	if err := cmd.Start(); err != nil {
		c.done <- err
		s.log.Error("child did not start", "error", err.Error())
		return c
	}
	s.stats.Update(func(st *Stats) { st.Starts++ })
	s.log.Info("child started", "pid", cmd.Process.Pid)
	go func() { c.done <- cmd.Wait() }()
	return c
}

// stop sends SIGTERM, then SIGKILL after StopTimeout, to the child's process group —
// the child and what it started, such as the program a wrapper shell runs, which would
// otherwise go on with the old token — and waits for the child's exit.
func (s *Sink) stop(c *child) {
	if c.cmd.Process == nil {
		return
	}
	select {
	case err := <-c.done:
		c.done <- err // it has exited (and been reaped: its pid may be reused)
		return
	default:
	}
	pgid := -c.cmd.Process.Pid
	_ = syscall.Kill(pgid, syscall.SIGTERM)
	t := time.NewTimer(s.o.StopTimeout)
	defer t.Stop()
	select {
	case <-c.done:
	case <-t.C:
		s.log.Warn("child ignored SIGTERM; killing it", "pid", c.cmd.Process.Pid)
		_ = syscall.Kill(pgid, syscall.SIGKILL)
		<-c.done
	}
}

func exitStatus(err error) string {
	if err == nil {
		return "0"
	}
	return err.Error()
}
