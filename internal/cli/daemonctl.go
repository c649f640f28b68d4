package cli

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"banger/internal/buildinfo"
	"banger/internal/rpc"
)

// Bounds of starting and stopping the daemon.
const (
	daemonStartTimeout = 15 * time.Second
	daemonStopTimeout  = 30 * time.Second
	probeTimeout       = 3 * time.Second
	logTailLines       = 20
)

func (a *app) socketPath() (string, error) {
	if a.socket != "" {
		return a.socket, nil
	}
	l, err := a.config()
	if err != nil {
		return "", err
	}
	return filepath.Join(l.Config.RuntimeDir, "bangerd.sock"), nil
}

func (a *app) logPath() (string, error) {
	l, err := a.config()
	if err != nil {
		return "", err
	}
	return filepath.Join(l.Config.StateDir, "bangerd.log"), nil
}

// probe returns the daemon's version info, or a *rpc.DaemonUnreachableError
// when nothing listens.
func (a *app) probe(ctx context.Context) (*rpc.Client, rpc.VersionInfo, error) {
	sock, err := a.socketPath()
	if err != nil {
		return nil, rpc.VersionInfo{}, err
	}
	c := rpc.NewClient(sock)
	pctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	v, err := c.Version(pctx)
	if err != nil && dying(err) {
		// A daemon that was just killed can accept a connection in the
		// moment before its sockets close; ask once more.
		time.Sleep(200 * time.Millisecond)
		c.Close()
		c = rpc.NewClient(sock)
		v, err = c.Version(pctx)
		if err != nil && dying(err) {
			err = &rpc.DaemonUnreachableError{Socket: sock, Err: err}
		}
	}
	if err != nil {
		c.Close()
		return nil, v, err
	}
	return c, v, nil
}

// dying reports a connection that was accepted and then dropped.
func dying(err error) bool {
	return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)
}

// daemon returns a client for a running daemon, starting one when none
// answers, and warns once when the daemon comes from another build.
func (a *app) daemon(ctx context.Context) (*rpc.Client, error) {
	if a.client != nil {
		return a.client, nil
	}
	c, v, err := a.probe(ctx)
	var unreachable *rpc.DaemonUnreachableError
	if errors.As(err, &unreachable) {
		c, v, err = a.startDaemon(ctx)
	}
	if err != nil {
		return nil, err
	}
	a.checkVersion(v)
	a.client = c
	return c, nil
}

func (a *app) checkVersion(v rpc.VersionInfo) {
	if a.warned || v.Version == buildinfo.Version {
		return
	}
	a.warned = true
	a.warnf("bangerd is version %s but this CLI is %s; run `banger daemon restart` to run the daemon of this build", v.Version, buildinfo.Version)
}

// bangerdPath finds the daemon binary: $BANGER_DAEMON_BIN, then beside this
// executable, then on PATH.
func (a *app) bangerdPath() (string, error) {
	if a.daemonBin != "" {
		return a.daemonBin, nil
	}
	if p := a.getenv("BANGER_DAEMON_BIN"); p != "" {
		return p, nil
	}
	if exe, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(exe), "bangerd")
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	p, err := exec.LookPath("bangerd")
	if err != nil {
		return "", errors.New("cannot find the bangerd binary beside banger or on PATH: install it (make install) or set BANGER_DAEMON_BIN")
	}
	return p, nil
}

// startDaemon launches bangerd in the background, in its own session, with
// its output appended to the daemon log, and waits a bounded time for it to
// answer. On failure the error carries the tail of the log.
func (a *app) startDaemon(ctx context.Context) (*rpc.Client, rpc.VersionInfo, error) {
	bin, err := a.bangerdPath()
	if err != nil {
		return nil, rpc.VersionInfo{}, err
	}
	release, waited, err := a.waitForUpdate(ctx, bin)
	if err != nil {
		return nil, rpc.VersionInfo{}, err
	}
	defer release()
	if waited {
		if c, v, err := a.probe(ctx); err == nil {
			return c, v, nil // the update started the new bangerd
		}
	}
	l, err := a.config()
	if err != nil {
		return nil, rpc.VersionInfo{}, err
	}
	if err := os.MkdirAll(l.Config.StateDir, 0o700); err != nil {
		return nil, rpc.VersionInfo{}, fmt.Errorf("create state dir: %w", err)
	}
	logPath, _ := a.logPath()
	logFile, err := os.OpenFile(logPath, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, rpc.VersionInfo{}, fmt.Errorf("open daemon log: %w", err)
	}
	defer logFile.Close()
	args := []string{"--background"}
	if l.FileFound || a.configPath != "" {
		args = append(args, "--config", l.Path)
	}
	if a.socket != "" {
		args = append(args, "--socket", a.socket)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if !a.quiet {
		fmt.Fprintln(a.stderr, "Starting bangerd...")
	}
	if err := cmd.Start(); err != nil {
		return nil, rpc.VersionInfo{}, fmt.Errorf("start %s: %w", bin, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	var lost string // why ours exited when another bangerd holds the state dir

	deadline := time.NewTimer(daemonStartTimeout)
	defer deadline.Stop()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			a.killUnanswered(cmd, exited)
			return nil, rpc.VersionInfo{}, ctx.Err()
		case err := <-exited:
			if reason := startFailure(logPath); strings.Contains(reason, "already runs for state dir") {
				// Another banger started a bangerd at the same moment, and
				// that one holds the state dir: use it once it answers.
				exited, lost = nil, reason
				continue
			} else if reason != "" {
				// The daemon said why: that is the error, not its log.
				return nil, rpc.VersionInfo{}, fmt.Errorf("bangerd exited during start: %s\n\n(the daemon log is %s)", reason, logPath)
			}
			return nil, rpc.VersionInfo{}, fmt.Errorf("bangerd exited during start (%v); the daemon log is %s%s", err, logPath, logTail(logPath))
		case <-deadline.C:
			a.killUnanswered(cmd, exited)
			if lost != "" {
				return nil, rpc.VersionInfo{}, fmt.Errorf("bangerd exited during start: %s, but that one did not answer within %s\n\n(the daemon log is %s)", lost, daemonStartTimeout, logPath)
			}
			return nil, rpc.VersionInfo{}, fmt.Errorf("bangerd (pid %d) did not answer within %s; the daemon log is %s%s", cmd.Process.Pid, daemonStartTimeout, logPath, logTail(logPath))
		case <-tick.C:
			c, v, err := a.probe(ctx)
			if err == nil {
				return c, v, nil
			}
			if ctx.Err() != nil {
				// Cancelled or out of time during the probe: the same as
				// the ctx.Done case above.
				a.killUnanswered(cmd, exited)
				return nil, rpc.VersionInfo{}, ctx.Err()
			}
			var unreachable *rpc.DaemonUnreachableError
			if !errors.As(err, &unreachable) {
				return nil, v, err
			}
		}
	}
}

// killUnanswered kills the bangerd this process just started and that did
// not answer, when the caller asked for it (banger update, which must
// start the old bangerd in its place), and reaps it.
func (a *app) killUnanswered(cmd *exec.Cmd, exited <-chan error) {
	if !a.killHungDaemon || exited == nil {
		return
	}
	_ = cmd.Process.Kill()
	<-exited
}

// logTail renders the last lines of the log, for an error message.
func logTail(path string) string {
	lines := lastLogLines(path)
	if len(lines) == 0 {
		return ""
	}
	return "\n\nlast lines of the daemon log:\n  " + strings.Join(lines, "\n  ")
}

// startFailure is the reason a daemon that exited at start gave, on its
// last line ("bangerd: ..." on stderr, which lands in the log), or "".
func startFailure(path string) string {
	lines := lastLogLines(path)
	if len(lines) == 0 {
		return ""
	}
	reason, ok := strings.CutPrefix(lines[len(lines)-1], "bangerd: ")
	if !ok {
		return ""
	}
	return strings.TrimSpace(reason)
}

// lastLogLines reads the last lines of the log, from its last 64 KiB only:
// the log of a long-lived daemon can be large.
func lastLogLines(path string) []string {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	const tail = 64 << 10
	var off int64
	if fi, err := f.Stat(); err == nil && fi.Size() > tail {
		off = fi.Size() - tail
	}
	data, err := io.ReadAll(io.NewSectionReader(f, off, tail))
	if err != nil || len(bytes.TrimSpace(data)) == 0 {
		return nil
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if off > 0 && len(lines) > 1 {
		lines = lines[1:] // the first may be cut
	}
	if len(lines) > logTailLines {
		lines = lines[len(lines)-logTailLines:]
	}
	return lines
}

// stopDaemon asks a running daemon to shut down and waits until its socket
// stops answering. It reports whether a daemon was running.
func (a *app) stopDaemon(ctx context.Context) (bool, error) {
	c, v, err := a.probe(ctx)
	var unreachable *rpc.DaemonUnreachableError
	if errors.As(err, &unreachable) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	defer c.Close()
	if err := c.Do(ctx, "POST", "/v1/daemon/shutdown", nil, nil); err != nil {
		return true, fmt.Errorf("ask bangerd (pid %d) to stop: %w", v.PID, err)
	}
	deadline := time.Now().Add(daemonStopTimeout)
	for time.Now().Before(deadline) {
		if !processAlive(v.PID) {
			return true, nil
		}
		select {
		case <-ctx.Done():
			return true, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return true, fmt.Errorf("bangerd (pid %d) is still running %s after it was asked to stop; see %s", v.PID, daemonStopTimeout, v.LogFile)
}

func processAlive(pid int) bool {
	if pid <= 0 {
		return false
	}
	err := syscall.Kill(pid, 0)
	if err != nil {
		return errors.Is(err, syscall.EPERM)
	}
	// A zombie child (a daemon this process started) counts as gone.
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err == nil {
		if i := bytes.LastIndexByte(stat, ')'); i > 0 && i+2 < len(stat) && stat[i+2] == 'Z' {
			return false
		}
	}
	return true
}
