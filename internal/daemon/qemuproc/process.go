package qemuproc

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
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
