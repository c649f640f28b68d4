package cli

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"banger/internal/daemon/privhelper"
	"banger/internal/progress"
	"banger/internal/rpc"
	"banger/internal/update"
)

// Systemd units an update restarts.
const (
	helperUnit = "banger-helper.service" // system unit, root
	daemonUnit = "bangerd.service"       // user unit (packaging/systemd)
)

// updateServices is update.Services on this host: bangerd through the
// CLI's daemon control (or `systemctl --user` when its user unit runs it),
// the helper through systemctl and its hello.
type updateServices struct {
	a          *app
	in         *update.Install
	systemctl  string // "" when systemctl is not installed
	helperSock string
	userUnit   bool // the running bangerd is the main process of bangerd.service
}

var _ update.Services = (*updateServices)(nil)

func (a *app) newUpdateServices(in *update.Install) (*updateServices, error) {
	l, err := a.config()
	if err != nil {
		return nil, err
	}
	s := &updateServices{a: a, in: in, helperSock: l.Config.HelperSocket}
	if p, err := exec.LookPath("systemctl"); err == nil {
		s.systemctl = p
	}
	return s, nil
}

func (s *updateServices) run(ctx context.Context, args ...string) (string, error) {
	out, err := exec.CommandContext(ctx, s.systemctl, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("systemctl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return strings.TrimSpace(string(out)), nil
}

// DaemonRunning asks bangerd's socket, and notes whether bangerd.service
// (a user unit) is what runs it, so that it is stopped and started
// through systemd and not behind its back.
func (s *updateServices) DaemonRunning(ctx context.Context) (bool, error) {
	c, v, err := s.a.probe(ctx)
	var unreachable *rpc.DaemonUnreachableError
	if errors.As(err, &unreachable) {
		if s.userUnit {
			// A unit started by this update that hangs in its start
			// answers nothing but still runs: it must be stopped.
			out, _ := exec.CommandContext(ctx, s.systemctl, "--user", "is-active", daemonUnit).Output()
			st := strings.TrimSpace(string(out))
			return st == "active" || st == "activating", nil
		}
		return false, nil
	}
	if err != nil {
		return false, err
	}
	c.Close()
	if s.systemctl != "" {
		out, err := s.run(ctx, "--user", "show", "--property=MainPID", "--value", daemonUnit)
		if pid, perr := strconv.Atoi(out); err == nil && perr == nil && pid == v.PID && pid > 0 {
			s.userUnit = true
		}
	}
	return true, nil
}

func (s *updateServices) StopDaemon(ctx context.Context) error {
	if s.userUnit {
		_, err := s.run(ctx, "--user", "stop", daemonUnit)
		return err
	}
	_, err := s.a.stopDaemon(ctx)
	return err
}

// HelperActive is `systemctl is-active banger-helper.service`; without
// systemctl there is no unit to restart.
func (s *updateServices) HelperActive(ctx context.Context) (bool, error) {
	if s.systemctl == "" {
		return false, nil
	}
	out, err := exec.CommandContext(ctx, s.systemctl, "is-active", helperUnit).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return false, nil // inactive, failed or unknown: not running
		}
		return false, fmt.Errorf("systemctl is-active %s: %w", helperUnit, err)
	}
	return strings.TrimSpace(string(out)) == "active", nil
}

func (s *updateServices) RestartHelper(ctx context.Context) error {
	_, err := s.run(ctx, "restart", helperUnit)
	return err
}

// HelperVersion sends the helper a hello and returns its build version.
// The protocol is not checked here (this CLI is the old build; the helper
// speaks the new protocol): the version must be the new one.
func (s *updateServices) HelperVersion(ctx context.Context) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	r, err := privhelper.Client{Socket: s.helperSock}.Do(ctx, privhelper.Request{Op: privhelper.OpHello})
	if err != nil {
		return "", err
	}
	return r.Version, nil
}

// StartDaemon starts the install's bangerd (through its user unit when
// that ran it) and returns the version it answers with.
func (s *updateServices) StartDaemon(ctx context.Context) (string, error) {
	if !s.userUnit {
		s.a.daemonBin, s.a.killHungDaemon = s.in.Path("bangerd"), true
		c, v, err := s.a.startDaemon(ctx)
		if err != nil {
			return "", err
		}
		c.Close()
		return v.Version, nil
	}
	if _, err := s.run(ctx, "--user", "start", daemonUnit); err != nil {
		return "", fmt.Errorf("%w (see `journalctl --user -u %s`)", err, daemonUnit)
	}
	for {
		c, v, err := s.a.probe(ctx)
		if err == nil {
			c.Close()
			return v.Version, nil
		}
		select {
		case <-ctx.Done():
			logPath, _ := s.a.logPath()
			return "", fmt.Errorf("%s started but bangerd did not answer: %w (see `journalctl --user -u %s`)%s", daemonUnit, err, daemonUnit, logTail(logPath))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// downloadReporter renders a download's progress.Reporter calls with the
// CLI's operation renderers: a live bar on a terminal, plain lines
// otherwise, nothing with --quiet.
type downloadReporter struct {
	r  renderer
	op rpc.Operation
}

func newDownloadReporter(a *app, name string) *downloadReporter {
	return &downloadReporter{r: newRenderer(a), op: rpc.Operation{ID: "update", Kind: "download", Target: name, State: rpc.StateRunning}}
}

func (d *downloadReporter) Phase(name string) {
	d.op.Phase, d.op.Done, d.op.Total, d.op.Unit = name, 0, 0, progress.None
	d.r.update(d.op)
}

func (d *downloadReporter) SetTotal(total int64, unit progress.Unit) {
	d.op.Total, d.op.Unit = total, unit
	if d.op.Phase == "" {
		d.op.Phase = "downloading"
	}
	d.r.update(d.op)
}

func (d *downloadReporter) Add(n int64) {
	d.op.Done += n
	if d.op.Phase == "" {
		d.op.Phase, d.op.Unit = "downloading", progress.Bytes
	}
	d.r.update(d.op)
}

func (d *downloadReporter) finish(err error) {
	d.op.State = rpc.StateSucceeded
	if err != nil {
		d.op.State, d.op.Error = rpc.StateFailed, err.Error()
	}
	d.r.finish(d.op)
}
