package fcproc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"banger/internal/procwatch"
)

// File names inside a VM's directory.
const (
	APISocketName   = "fc.sock"
	VsockSocketName = "vsock.sock"
	ConsoleLogName  = "console.log"
	LogName         = "firecracker.log"
	MetricsName     = "metrics.json"
)

// APISocketPath is the Firecracker API socket of the VM directory dir.
func APISocketPath(dir string) string { return filepath.Join(dir, APISocketName) }

// VsockPath is the vsock Unix socket (Firecracker's uds_path) of dir.
func VsockPath(dir string) string { return filepath.Join(dir, VsockSocketName) }

// DriveLinkName is the name, in the VM's directory, of the symlink to the
// drive id's file. An unjailed Firecracker runs in the VM's directory and
// is given its drives and vsock socket by these relative names, so that a
// snapshot (which records them) names no other VM's files: a clone loads
// it in its own directory, where the same names lead to its own disks.
func DriveLinkName(id string) string { return "drive-" + id }

// ConsoleLogPath is where the guest's serial console (Firecracker's stdout
// and stderr) is written.
func ConsoleLogPath(dir string) string { return filepath.Join(dir, ConsoleLogName) }

// LogPath is Firecracker's own log.
func LogPath(dir string) string { return filepath.Join(dir, LogName) }

// MetricsPath is the file Firecracker flushes its JSON metrics to.
func MetricsPath(dir string) string { return filepath.Join(dir, MetricsName) }

// Timeouts bound each stage. Zero fields take the defaults shown.
type Timeouts struct {
	Call       time.Duration // one API call (5 s)
	APISocket  time.Duration // spawn until the API socket answers (5 s)
	Graceful   time.Duration // the caller's graceful hook plus the wait for exit (10 s)
	CtrlAltDel time.Duration // SendCtrlAltDel plus the wait for exit (5 s)
	Kill       time.Duration // wait for exit after SIGKILL (5 s)
}

func (t Timeouts) withDefaults() Timeouts {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&t.Call, DefaultCallTimeout)
	def(&t.APISocket, 5*time.Second)
	def(&t.Graceful, 10*time.Second)
	def(&t.CtrlAltDel, 5*time.Second)
	def(&t.Kill, 5*time.Second)
	return t
}

// StepTrace is how long one named step took.
type StepTrace struct {
	Name     string
	Duration time.Duration
}

// ErrNotOurs is wrapped by Adopt when the process is not the Firecracker it
// was asked for (PID reused, or another program).
var ErrNotOurs = errors.New("not ours")

// ErrNotRunning is wrapped by Adopt when the process has exited.
var ErrNotRunning = errors.New("not running")

// Process is one running (or exited) Firecracker.
type Process struct {
	PID       int
	StartTime uint64 // field 22 of /proc/PID/stat, to tell a reused PID apart
	Dir       string
	// ConfigDuration is the time from spawn to the InstanceStart call (zero
	// for an adopted process).
	ConfigDuration time.Duration
	// Steps are the start steps in order with their durations.
	Steps []StepTrace
	// Timeouts bound Stop; Start copies them from Config, Adopt uses defaults.
	Timeouts Timeouts
	// Jailed is true when Firecracker runs under the jailer; its chroot
	// is removed once it has exited.
	Jailed  bool
	jailDir string // the chroot's parent, BaseDir/<firecracker>/<id>

	client *Client
	log    *slog.Logger
	// proc holds the process through a pidfd: signals never reach a
	// process that took over its PID. For a spawned process it also reaps.
	proc    *procwatch.Handle
	adopted bool

	released chan struct{} // adopted only: stop watching
	relOnce  sync.Once
}

// Client is the API client of this process.
func (p *Process) Client() *Client { return p.client }

// Done is closed when the process has exited.
func (p *Process) Done() <-chan struct{} { return p.proc.Done() }

// Wait blocks until the process exits and returns its exit error (nil for a
// clean exit; always nil for an adopted process, whose status is not ours to
// read). For an adopted process released with Release it returns at once
// with an error.
func (p *Process) Wait() error {
	select {
	case <-p.proc.Done():
		return p.proc.ExitErr()
	case <-p.released:
		select {
		case <-p.proc.Done():
			return p.proc.ExitErr()
		default:
			return fmt.Errorf("firecracker pid %d: released, no longer watched", p.PID)
		}
	}
}

// Exited reports whether the process has exited.
func (p *Process) Exited() bool { return p.proc.Exited() }

// Release stops watching an adopted process (its watcher goroutine ends
// and its pidfd is given back); the process itself keeps running, and this
// Process can no longer signal it: Adopt it again to stop it. It is a
// no-op for a spawned process, whose reaper must run until exit.
func (p *Process) Release() {
	if !p.adopted {
		return
	}
	p.relOnce.Do(func() { close(p.released) })
	p.proc.Close()
	p.client.Close()
}

// spawned sets up a Process for a child just started through
// procwatch.Start, which reaps it.
func spawned(h *procwatch.Handle, dir string, t Timeouts, log *slog.Logger) *Process {
	return &Process{
		PID:       h.PID(),
		StartTime: h.StartTime(),
		Dir:       dir,
		Timeouts:  t,
		client:    NewClient(APISocketPath(dir), t.Call),
		log:       log,
		proc:      h,
		released:  make(chan struct{}),
	}
}

// Adopt re-attaches to a Firecracker found running after a daemon restart.
// It holds pid through a pidfd, checks that it still has startTime (field
// 22 of /proc/PID/stat) and that its command line carries --api-sock
// dir/fc.sock (or, jailed, that it runs in the chroot the run dir links
// to); otherwise it fails with ErrNotOurs (or ErrNotRunning when the
// process is gone). The returned Process notices exit through the pidfd
// and signals through it; call Stop to stop the VM, or Release to stop
// watching it.
func Adopt(pid int, startTime uint64, dir string) (*Process, error) {
	if pid <= 0 {
		return nil, fmt.Errorf("adopt firecracker: invalid pid %d", pid)
	}
	sock := APISocketPath(dir)
	h, err := procwatch.Open(pid, startTime)
	switch {
	case errors.Is(err, procwatch.ErrGone):
		return nil, fmt.Errorf("adopt firecracker pid %d: %w: %w", pid, ErrNotRunning, err)
	case errors.Is(err, procwatch.ErrReused):
		return nil, fmt.Errorf("adopt firecracker pid %d: %w: %w (the PID was reused)", pid, ErrNotOurs, err)
	case err != nil:
		return nil, fmt.Errorf("adopt firecracker pid %d: %w", pid, err)
	}
	proc := procwatch.Proc{PID: pid}
	args, err := proc.Cmdline()
	if err != nil {
		h.Close()
		return nil, fmt.Errorf("adopt firecracker pid %d: read its command line: %w", pid, err)
	}
	jailDir := ""
	if !cmdlineHasAPISock(args, sock) {
		// A jailed Firecracker names the socket inside its chroot; the
		// run dir's link says which chroot, and the process must be in it.
		root, ok := jailRootOf(dir)
		if !ok || !cmdlineHasAPISock(args, jailAPISock) || !proc.InRoot(root) {
			h.Close()
			return nil, fmt.Errorf("adopt firecracker pid %d: %w: its command line has no --api-sock %s and it is not jailed in that VM's chroot", pid, ErrNotOurs, sock)
		}
		jailDir = filepath.Dir(root)
	}
	t := Timeouts{}.withDefaults()
	return &Process{
		PID:       pid,
		StartTime: startTime,
		Dir:       dir,
		Timeouts:  t,
		client:    NewClient(sock, t.Call),
		log:       slog.New(slog.DiscardHandler),
		proc:      h,
		adopted:   true,
		released:  make(chan struct{}),
		Jailed:    jailDir != "",
		jailDir:   jailDir,
	}, nil
}

// waitExit waits until the process exits or ctx ends; it reports whether the
// process exited.
func (p *Process) waitExit(ctx context.Context) bool {
	select {
	case <-p.Done():
		return true
	case <-ctx.Done():
		return p.Exited()
	}
}

// signal sends sig to the process through its pidfd, never to a different
// process that has taken over its PID. An exited process is no error.
func (p *Process) signal(sig syscall.Signal) error {
	return p.proc.Signal(sig)
}

// Stop stops the VM: first graceful (the guest agent's poweroff, may be nil)
// bounded by Timeouts.Graceful, then Ctrl-Alt-Del bounded by
// Timeouts.CtrlAltDel, then SIGKILL. When ctx ends the remaining polite
// stages are skipped and the process is killed. Once it has exited, both
// sockets are removed. Stop returns an error only if the process could not
// be made to exit.
func (p *Process) Stop(ctx context.Context, graceful func(context.Context) error) error {
	t := p.Timeouts.withDefaults()
	if p.Exited() {
		p.removeSockets()
		return nil
	}
	if graceful != nil && ctx.Err() == nil {
		gctx, cancel := context.WithTimeout(ctx, t.Graceful)
		err := graceful(gctx)
		if err != nil {
			p.log.Debug("firecracker stop: graceful hook failed", "pid", p.PID, "err", err)
		}
		exited := err == nil && p.waitExit(gctx)
		cancel()
		if exited {
			p.removeSockets()
			return nil
		}
	}
	if ctx.Err() == nil {
		cctx, cancel := context.WithTimeout(ctx, t.CtrlAltDel)
		err := p.client.SendCtrlAltDel(cctx)
		if err != nil {
			p.log.Debug("firecracker stop: SendCtrlAltDel failed", "pid", p.PID, "err", err)
		}
		exited := err == nil && p.waitExit(cctx)
		cancel()
		if exited || p.Exited() {
			p.removeSockets()
			return nil
		}
	}
	if err := p.signal(syscall.SIGKILL); err != nil {
		return fmt.Errorf("stop firecracker pid %d: SIGKILL: %w", p.PID, err)
	}
	// Killing cannot be refused; wait for it even when ctx has ended.
	kctx, cancel := context.WithTimeout(context.Background(), t.Kill)
	defer cancel()
	if !p.waitExit(kctx) {
		return fmt.Errorf("stop firecracker pid %d: still running %s after SIGKILL; check it with ps", p.PID, t.Kill)
	}
	p.removeSockets()
	return nil
}

// kill is Start's cleanup: SIGKILL, wait, remove sockets.
func (p *Process) kill() error {
	if err := p.signal(syscall.SIGKILL); err != nil {
		return fmt.Errorf("SIGKILL pid %d: %w", p.PID, err)
	}
	kctx, cancel := context.WithTimeout(context.Background(), p.Timeouts.withDefaults().Kill)
	defer cancel()
	if !p.waitExit(kctx) {
		return fmt.Errorf("pid %d still running after SIGKILL", p.PID)
	}
	p.client.Close()
	p.removeSockets()
	return nil
}

func (p *Process) removeSockets() {
	p.client.Close()
	if p.jailDir != "" {
		if err := removeJail(p.Dir, p.jailDir); err != nil {
			p.log.Warn("firecracker: remove the jail", "dir", p.jailDir, "err", err)
		}
		return
	}
	for _, s := range []string{APISocketPath(p.Dir), VsockPath(p.Dir)} {
		if err := os.Remove(s); err != nil && !errors.Is(err, os.ErrNotExist) {
			p.log.Warn("firecracker: remove socket", "path", s, "err", err)
		}
	}
}
