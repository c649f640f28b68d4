package qemuproc

import (
	"banger/internal/hostprobe"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"slices"
	"sync"
	"syscall"
	"time"

	"banger/internal/procwatch"
)

// ErrNotOurs means a PID given to Adopt is not the QEMU of that directory.
var ErrNotOurs = errors.New("not our QEMU")

// StopMethod says what ended a QEMU process.
type StopMethod string

// Ways a QEMU process ends.
const (
	StopNone      StopMethod = ""          // still running, or Stop not called
	StopExited    StopMethod = "exited"    // it had exited before Stop acted
	StopGraceful  StopMethod = "graceful"  // the caller's hook (agent poweroff)
	StopPowerdown StopMethod = "powerdown" // QMP system_powerdown
	StopQuit      StopMethod = "quit"      // QMP quit
	StopKill      StopMethod = "kill"      // SIGKILL
)

// Process is one running QEMU. Its fields are set once and only read.
type Process struct {
	PID       int
	StartTime uint64 // field 22 of /proc/PID/stat, to tell a reused PID apart
	Dir       string

	QMPSocket   string
	AgentSocket string // connect here to reach the guest agent's port
	ConsoleLog  string
	Log         string // QEMU's stdout and stderr

	Accel       Accel
	AccelReason string
	// Forwards are the user-mode forwards with their host ports filled in.
	Forwards []Forward

	// Timeouts bound Stop; set them before calling it.
	Timeouts Timeouts

	cmd *exec.Cmd // nil when adopted
	// proc holds QEMU through a pidfd: signals never reach a process that
	// took over its PID. For a started QEMU it also reaps it.
	proc *procwatch.Handle

	stopMu    sync.Mutex
	stoppedBy StopMethod
}

// Done is closed once QEMU has exited.
func (p *Process) Done() <-chan struct{} { return p.proc.Done() }

// Exited reports whether QEMU has exited.
func (p *Process) Exited() bool { return p.proc.Exited() }

// Release stops watching an adopted QEMU (Done then never closes) and
// gives back its pidfd; QEMU keeps running, and this Process can no longer
// kill it: Adopt it again to stop it. For a started QEMU it does nothing:
// its reaper runs until QEMU exits.
func (p *Process) Release() { p.proc.Close() }

// Wait waits until QEMU exits or ctx ends. It returns QEMU's exit error
// (nil for exit status 0; always nil for an adopted process, whose status
// belongs to its parent).
func (p *Process) Wait(ctx context.Context) error {
	select {
	case <-p.proc.Done():
		return p.proc.ExitErr()
	case <-ctx.Done():
		return ctx.Err()
	}
}

// StoppedBy says which step of Stop ended QEMU.
func (p *Process) StoppedBy() StopMethod {
	p.stopMu.Lock()
	defer p.stopMu.Unlock()
	return p.stoppedBy
}

// QMP connects to this QEMU's monitor. The monitor takes one client at a
// time: close it when done.
func (p *Process) QMP(ctx context.Context) (*QMP, error) {
	return DialQMP(ctx, p.QMPSocket)
}

// signal sends sig through QEMU's pidfd; an exited QEMU is no error.
func (p *Process) signal(sig syscall.Signal) error { return p.proc.Signal(sig) }

// removeSockets deletes the sockets QEMU leaves behind when killed.
func (p *Process) removeSockets() {
	// A failure leaves a file the next Start removes (or explains).
	os.Remove(p.QMPSocket)
	os.Remove(p.AgentSocket)
}

// waitBounded waits for exit for at most d, and not past ctx.
func (p *Process) waitBounded(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-p.Done():
		return true
	case <-t.C:
	case <-ctx.Done():
	}
	return p.Exited()
}

// Stop ends QEMU in escalating steps, each bounded by p.Timeouts: the
// caller's graceful hook (typically the agent's poweroff; nil skips it) and
// a wait for QEMU to exit; QMP system_powerdown and a wait (a guest without
// an ACPI power-button handler ignores it); QMP quit and a wait; SIGKILL and
// a wait. A failing step moves on to the next one at once; when ctx ends the
// remaining gentle steps are skipped and QEMU is killed. The sockets are
// removed once QEMU is gone. Stop returns an error only when QEMU is still
// running afterwards.
func (p *Process) Stop(ctx context.Context, graceful func(context.Context) error) error {
	p.stopMu.Lock()
	defer p.stopMu.Unlock()
	if p.Exited() {
		if p.stoppedBy == StopNone {
			p.stoppedBy = StopExited
		}
		p.removeSockets()
		return nil
	}
	t := p.Timeouts.withDefaults()
	step := func(m StopMethod, bound time.Duration, act func(context.Context) error) bool {
		if ctx.Err() != nil {
			return false
		}
		sctx, cancel := context.WithTimeout(ctx, bound)
		defer cancel()
		if err := act(sctx); err != nil {
			return p.Exited() && p.setStopped(m)
		}
		return p.waitBounded(sctx, bound) && p.setStopped(m)
	}
	qmp := func(do func(*QMP, context.Context) error) func(context.Context) error {
		return func(ctx context.Context) error {
			q, err := p.QMP(ctx)
			if err != nil {
				return err
			}
			defer q.Close()
			return do(q, ctx)
		}
	}
	if graceful != nil && step(StopGraceful, t.Graceful, graceful) {
		p.removeSockets()
		return nil
	}
	if step(StopPowerdown, t.Powerdown, qmp((*QMP).SystemPowerdown)) ||
		step(StopQuit, t.Quit, qmp((*QMP).Quit)) {
		p.removeSockets()
		return nil
	}
	if err := p.signal(syscall.SIGKILL); err != nil && !p.Exited() {
		return fmt.Errorf("stop QEMU pid %d in %s: SIGKILL failed: %w", p.PID, p.Dir, err)
	}
	if !p.waitBounded(context.Background(), t.Kill) {
		return fmt.Errorf("stop QEMU pid %d in %s: still running %s after SIGKILL (stuck in the kernel?); check `cat /proc/%d/stack`", p.PID, p.Dir, t.Kill, p.PID)
	}
	p.setStopped(StopKill)
	p.removeSockets()
	return nil
}

// setStopped records m (Stop holds stopMu) and returns true.
func (p *Process) setStopped(m StopMethod) bool {
	p.stoppedBy = m
	return true
}

// Start launches QEMU for cfg and waits until its QMP monitor answers and
// the VM runs. On failure QEMU is killed and waited for, the sockets are
// removed, and the error names the step that failed (with the end of
// qemu.log when QEMU said why). When QEMU cannot bind a host port that
// Start picked itself, it tries again with new ports.
func Start(ctx context.Context, cfg Config) (*Process, error) {
	var err error
	for range 3 {
		var p *Process
		var retry bool
		p, retry, err = start(ctx, cfg)
		if err == nil || !retry {
			return p, err
		}
	}
	return nil, err
}

type startStep struct {
	name string
	run  func(ctx context.Context) error
}

func start(ctx context.Context, cfg Config) (p *Process, retry bool, err error) {
	// Copy what check fills in so the caller's Config is not changed.
	if u := cfg.Net.User; u != nil {
		uc := *u
		uc.Forwards = slices.Clone(u.Forwards)
		cfg.Net.User = &uc
	}
	var (
		pl        = &plan{cfg: cfg}
		binary    string
		reason    string
		autoPorts bool
		logf      *os.File
		files     []*os.File
		sockets   bool // Start made the sockets: abort removes them
	)
	p = &Process{}
	steps := []startStep{
		{"check the configuration", func(context.Context) error {
			if err := pl.cfg.check(); err != nil {
				return err
			}
			name := pl.cfg.Binary
			if name == "" {
				name = DefaultBinary
			}
			b, err := exec.LookPath(name)
			if err != nil {
				return fmt.Errorf("QEMU binary %q not found (%v); install the qemu-system-x86 package or set the path of qemu-system-x86_64", name, err)
			}
			binary = b
			return nil
		}},
		{"choose the accelerator", func(context.Context) error {
			a, why, err := chooseAccel(pl.cfg.Accel, hostprobe.ProbeKVM(hostprobe.System()))
			if err != nil {
				return err
			}
			pl.accel, reason = a, why
			if a == AccelTCG {
				pl.tscKHz = pl.cfg.TSCkHz
				if pl.tscKHz == 0 {
					pl.tscKHz, _ = hostTSCkHz()
				}
			}
			return nil
		}},
		{"prepare the runtime directory", func(ctx context.Context) error {
			dir := pl.cfg.Dir
			if err := os.MkdirAll(dir, 0o700); err != nil {
				return err
			}
			// Something listening on the monitor socket means a QEMU still
			// runs here (a connect succeeds even while its one QMP client
			// slot is taken).
			var d net.Dialer
			if c, err := d.DialContext(ctx, "unix", QMPSocketPath(dir)); err == nil {
				c.Close()
				return fmt.Errorf("a QEMU is still running with its monitor at %s; stop it first", QMPSocketPath(dir))
			}
			for _, s := range []string{QMPSocketPath(dir), AgentSocketPath(dir)} {
				if err := os.Remove(s); err != nil && !errors.Is(err, os.ErrNotExist) {
					return fmt.Errorf("remove stale socket: %w", err)
				}
			}
			// Appending, so that a rotation that truncates the logs in
			// place (consolelog) is followed by QEMU's next write.
			f, err := os.OpenFile(LogPath(dir), os.O_WRONLY|os.O_CREATE|os.O_TRUNC|os.O_APPEND, 0o600)
			if err != nil {
				return err
			}
			logf = f
			for _, old := range []string{ConsoleLogPath(dir) + ".1", LogPath(dir) + ".1"} {
				if err := os.Remove(old); err != nil && !errors.Is(err, os.ErrNotExist) {
					return err
				}
			}
			return nil
		}},
		{"open what QEMU is given", func(context.Context) error {
			other := pl.cfg.Credential != nil && int(pl.cfg.Credential.Uid) != os.Geteuid()
			sockets = true
			f, err := pl.openFiles(other)
			files = f
			return err
		}},
		{"reserve the forwarded host ports", func(context.Context) error {
			if pl.cfg.Net.User == nil {
				return nil
			}
			pl.fwds = slices.Clone(pl.cfg.Net.User.Forwards)
			for i := range pl.fwds {
				if pl.fwds[i].HostPort != 0 {
					continue
				}
				port, err := freePort(pl.fwds[i].HostAddr)
				if err != nil {
					return err
				}
				pl.fwds[i].HostPort = port
				autoPorts = true
			}
			return nil
		}},
		{"launch QEMU", func(context.Context) error {
			cmd := exec.Command(binary, pl.args()...)
			cmd.Stdout, cmd.Stderr = logf, logf
			cmd.ExtraFiles = files
			cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: pl.cfg.Credential}
			// Held by a pidfd from the clone on, and reaped by its handle.
			h, err := procwatch.Start(cmd)
			// QEMU has its own copies now.
			closeAll(files)
			files = nil
			if c := pl.cfg.Credential; err != nil && c != nil && errors.Is(err, os.ErrPermission) {
				return fmt.Errorf("%w: QEMU's user (uid %d) cannot run %s; install QEMU where every user can run it (or set the path of one)", err, c.Uid, binary)
			}
			if err != nil {
				return err
			}
			logf.Close()
			logf = nil
			p.cmd, p.proc = cmd, h
			p.PID, p.StartTime = h.PID(), h.StartTime()
			return nil
		}},
		{"wait for the QMP monitor", func(ctx context.Context) error {
			ctx, cancel := context.WithTimeout(ctx, pl.cfg.StartTimeout)
			defer cancel()
			delay := 5 * time.Millisecond
			for {
				q, err := DialQMP(ctx, QMPSocketPath(pl.cfg.Dir))
				if err == nil {
					st, err := q.QueryStatus(ctx)
					q.Close()
					if err != nil {
						return err
					}
					if st.Status != "running" {
						return fmt.Errorf("the VM is %q, not running", st.Status)
					}
					return nil
				}
				select {
				case <-p.Done():
					return fmt.Errorf("QEMU exited (%v)", p.proc.ExitErr())
				case <-ctx.Done():
					return fmt.Errorf("no answer on %s within %s: %w", QMPSocketPath(pl.cfg.Dir), pl.cfg.StartTimeout, err)
				case <-time.After(delay):
				}
				delay = min(2*delay, 100*time.Millisecond)
			}
		}},
	}
	for _, s := range steps {
		if err := ctx.Err(); err != nil {
			closeAll(files)
			return p.abort(logf, pl.cfg.Dir, s.name, err, false, sockets)
		}
		if err := s.run(ctx); err != nil {
			closeAll(files)
			return p.abort(logf, pl.cfg.Dir, s.name, err, autoPorts, sockets)
		}
	}
	p.Dir = pl.cfg.Dir
	p.QMPSocket = QMPSocketPath(p.Dir)
	p.AgentSocket = AgentSocketPath(p.Dir)
	p.ConsoleLog = ConsoleLogPath(p.Dir)
	p.Log = LogPath(p.Dir)
	p.Accel, p.AccelReason = pl.accel, reason
	p.Forwards = pl.fwds
	p.Timeouts = pl.cfg.Timeouts
	return p, false, nil
}

// abort undoes a failed start: kill and reap QEMU if it runs, remove the
// sockets, and build the error. retry is true when QEMU could not bind a
// host port Start had picked.
func (p *Process) abort(logf *os.File, dir, step string, err error, autoPorts, sockets bool) (*Process, bool, error) {
	if logf != nil {
		logf.Close()
	}
	if p.proc != nil {
		_ = p.signal(syscall.SIGKILL)
		<-p.Done() // SIGKILL cannot be refused; the handle reaps it
	}
	msg := ""
	if sockets { // only then are the sockets ours
		os.Remove(QMPSocketPath(dir))
		os.Remove(AgentSocketPath(dir))
	}
	if p.proc != nil {
		msg = logTail(LogPath(dir))
	}
	retry := autoPorts && containsFold(msg, "could not set up host forwarding rule")
	e := fmt.Errorf("start QEMU in %s: %s: %w", dir, step, err)
	if msg != "" {
		e = fmt.Errorf("%w; QEMU said: %s", e, msg)
	}
	return nil, retry, e
}
