package qemuproc

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"slices"
	"syscall"
	"time"

	"banger/internal/hostprobe"
	"banger/internal/procwatch"
)

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

// startStep is one named step of a start; its name goes into the error
// when it fails.
type startStep struct {
	name string
	run  func(ctx context.Context) error
}

// starter holds what the steps of one start attempt hand on to each other,
// and what abort must undo when one of them fails.
type starter struct {
	p         *Process
	pl        *plan
	binary    string
	reason    string
	autoPorts bool
	logf      *os.File
	files     []*os.File
	sockets   bool // Start made the sockets: abort removes them
}

// steps lists the steps of a start in their order.
func (s *starter) steps() []startStep {
	return []startStep{
		{"check the configuration", s.checkConfig},
		{"choose the accelerator", s.chooseAccel},
		{"prepare the runtime directory", s.prepareDir},
		{"open what QEMU is given", s.openFiles},
		{"reserve the forwarded host ports", s.reservePorts},
		{"launch QEMU", s.launch},
		{"wait for the QMP monitor", s.waitQMP},
	}
}

// start makes one attempt at starting QEMU: it runs the steps in order and
// aborts at the first that fails (or once ctx ends). retry is true when
// the attempt failed only because QEMU could not bind a host port it had
// been given, so that another attempt picks new ones.
func start(ctx context.Context, cfg Config) (p *Process, retry bool, err error) {
	// Copy what check fills in so the caller's Config is not changed.
	if u := cfg.Net.User; u != nil {
		uc := *u
		uc.Forwards = slices.Clone(u.Forwards)
		cfg.Net.User = &uc
	}
	s := &starter{p: &Process{}, pl: &plan{cfg: cfg}}
	for _, st := range s.steps() {
		if err := ctx.Err(); err != nil {
			closeAll(s.files)
			return s.p.abort(s.logf, s.pl.cfg.Dir, st.name, err, false, s.sockets)
		}
		if err := st.run(ctx); err != nil {
			closeAll(s.files)
			return s.p.abort(s.logf, s.pl.cfg.Dir, st.name, err, s.autoPorts, s.sockets)
		}
	}
	return s.process(), false, nil
}

// process fills in the started Process from the plan.
func (s *starter) process() *Process {
	p, pl := s.p, s.pl
	p.Dir = pl.cfg.Dir
	p.QMPSocket = QMPSocketPath(p.Dir)
	p.AgentSocket = AgentSocketPath(p.Dir)
	p.ConsoleLog = ConsoleLogPath(p.Dir)
	p.Log = LogPath(p.Dir)
	p.Accel, p.AccelReason = pl.accel, s.reason
	p.Forwards = pl.fwds
	p.Timeouts = pl.cfg.Timeouts
	return p
}

// checkConfig checks the configuration and finds the QEMU binary.
func (s *starter) checkConfig(context.Context) error {
	if err := s.pl.cfg.check(); err != nil {
		return err
	}
	name := s.pl.cfg.Binary
	if name == "" {
		name = DefaultBinary
	}
	b, err := exec.LookPath(name)
	if err != nil {
		return fmt.Errorf("QEMU binary %q not found (%v); install the qemu-system-x86 package or set the path of qemu-system-x86_64", name, err)
	}
	s.binary = b
	return nil
}

// chooseAccel picks KVM or TCG from the host probe, and under TCG the TSC
// frequency the guest is told.
func (s *starter) chooseAccel(context.Context) error {
	pl := s.pl
	a, why, err := chooseAccel(pl.cfg.Accel, hostprobe.ProbeKVM(hostprobe.System()))
	if err != nil {
		return err
	}
	pl.accel, s.reason = a, why
	if a == AccelTCG {
		pl.tscKHz = pl.cfg.TSCkHz
		if pl.tscKHz == 0 {
			pl.tscKHz, _ = hostTSCkHz()
		}
	}
	return nil
}

// prepareDir makes the runtime directory, refuses one where a QEMU still
// runs, removes stale sockets and rotated logs, and opens qemu.log.
func (s *starter) prepareDir(ctx context.Context) error {
	dir := s.pl.cfg.Dir
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
	for _, sock := range []string{QMPSocketPath(dir), AgentSocketPath(dir)} {
		if err := os.Remove(sock); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("remove stale socket: %w", err)
		}
	}
	// Appending, so that a rotation that truncates the logs in
	// place (consolelog) is followed by QEMU's next write.
	f, err := os.OpenFile(LogPath(dir), os.O_WRONLY|os.O_CREATE|os.O_TRUNC|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	s.logf = f
	for _, old := range []string{ConsoleLogPath(dir) + ".1", LogPath(dir) + ".1"} {
		if err := os.Remove(old); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	return nil
}

// openFiles opens the files and sockets QEMU inherits; from here on the
// sockets are Start's to remove on abort.
func (s *starter) openFiles(context.Context) error {
	cred := s.pl.cfg.Credential
	other := cred != nil && int(cred.Uid) != os.Geteuid()
	s.sockets = true
	f, err := s.pl.openFiles(other)
	s.files = f
	return err
}

// reservePorts picks a free host port for each user-mode forward that
// names none.
func (s *starter) reservePorts(context.Context) error {
	pl := s.pl
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
		s.autoPorts = true
	}
	return nil
}

// launch starts the QEMU process, held by a pidfd, and hands it the opened
// files and the log.
func (s *starter) launch(context.Context) error {
	pl := s.pl
	cmd := exec.Command(s.binary, pl.args()...)
	cmd.Stdout, cmd.Stderr = s.logf, s.logf
	cmd.ExtraFiles = s.files
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: pl.cfg.Credential}
	// Held by a pidfd from the clone on, and reaped by its handle.
	h, err := procwatch.Start(cmd)
	// QEMU has its own copies now.
	closeAll(s.files)
	s.files = nil
	if c := pl.cfg.Credential; err != nil && c != nil && errors.Is(err, os.ErrPermission) {
		return fmt.Errorf("%w: QEMU's user (uid %d) cannot run %s; install QEMU where every user can run it (or set the path of one)", err, c.Uid, s.binary)
	}
	if err != nil {
		return err
	}
	s.logf.Close()
	s.logf = nil
	s.p.cmd, s.p.proc = cmd, h
	s.p.PID, s.p.StartTime = h.PID(), h.StartTime()
	return nil
}

// waitQMP waits, within the start timeout, until the QMP monitor answers
// and reports the VM running; it gives up at once if QEMU exits.
func (s *starter) waitQMP(ctx context.Context) error {
	cfg := s.pl.cfg
	ctx, cancel := context.WithTimeout(ctx, cfg.StartTimeout)
	defer cancel()
	delay := 5 * time.Millisecond
	for {
		q, err := DialQMP(ctx, QMPSocketPath(cfg.Dir))
		if err == nil {
			var st Status
			st, err = q.QueryStatus(ctx)
			q.Close()
			if err != nil {
				return err
			}
			if cfg.Incoming != "" { // loading a saved state: wait until it runs
				if done, err := finishIncoming(ctx, cfg.Dir, st); done || err != nil {
					return err
				}
			} else if st.Status != "running" {
				return fmt.Errorf("the VM is %q, not running", st.Status)
			} else {
				return nil
			}
			err = errors.New("the saved state is still loading")
		}
		select {
		case <-s.p.Done():
			return fmt.Errorf("QEMU exited (%v)", s.p.proc.ExitErr())
		case <-ctx.Done():
			return fmt.Errorf("no answer on %s within %s: %w", QMPSocketPath(cfg.Dir), cfg.StartTimeout, err)
		case <-time.After(delay):
		}
		delay = min(2*delay, 100*time.Millisecond)
	}
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
