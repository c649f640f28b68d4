package vmmtest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"banger/internal/daemon/vmm"
	"banger/internal/guest/agent"
	"banger/internal/guest/proto"
)

// Name is the fake driver's name.
const Name = "fake"

// Stop methods a Machine records.
const (
	StoppedGraceful = "graceful" // the guest powered off through its agent
	StoppedKill     = "kill"     // the escalation's end
	StoppedExit     = "exit"     // Exit: the VMM went on its own
)

// Driver is a fake VMM. Set its fields before the first Start.
type Driver struct {
	// NameOf is the name it registers under (default Name), so that it can
	// stand in for a real VMM ("qemu") where a test needs the choice rules.
	NameOf string
	// UsableErr is Usable's answer.
	UsableErr error
	// StartErr makes Start fail, after OnStart.
	StartErr error
	// OnStart runs at the beginning of each Start.
	OnStart func(spec vmm.Spec)
	// ExitAtBoot makes a started Machine exit at once; NotReady keeps its
	// agent answering "not ready"; IgnorePowerOff makes it ignore the
	// agent's poweroff, so Stop must escalate.
	ExitAtBoot, NotReady, IgnorePowerOff bool
	// Escalate bounds how long Stop waits after the graceful step before
	// it kills (default 200ms).
	Escalate time.Duration
	// Version is VMMVersion's answer (default DefaultVersion); VersionErr
	// makes it fail.
	Version    string
	VersionErr error
	// SaveErr makes SaveState fail, writing nothing.
	SaveErr error
	// CanSaveErr is CanSave's answer.
	CanSaveErr error
	// Resume, when set, is the agent's answer to a resumed request (and
	// the agent announces the capability); nil leaves it unserved, as an
	// old agent would.
	Resume func(context.Context, proto.ResumedRequest) proto.ResumedResult
	// AgentVersion is the version the fake agent says it is ("" = dev).
	AgentVersion string

	mu       sync.Mutex
	nextPID  int
	machines map[int]*Machine
	specs    []vmm.Spec
}

var _ vmm.Driver = (*Driver)(nil)

// Name is NameOf, or "fake".
func (d *Driver) Name() string {
	if d.NameOf != "" {
		return d.NameOf
	}
	return Name
}

// Usable returns UsableErr.
func (d *Driver) Usable(vmm.Host) (string, error) { return "the fake VMM", d.UsableErr }

// UserNetwork is true.
func (d *Driver) UserNetwork() bool { return true }

// Specs lists the specs Start was called with.
func (d *Driver) Specs() []vmm.Spec {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.specs)
}

// Running lists the machines still running.
func (d *Driver) Running() []*Machine {
	d.mu.Lock()
	defer d.mu.Unlock()
	var ms []*Machine
	for _, m := range d.machines {
		select {
		case <-m.done:
		default:
			ms = append(ms, m)
		}
	}
	return ms
}

// Start starts a fake VMM: an agent on RunDir/agent.sock and a line in
// RunDir/console.log.
func (d *Driver) Start(ctx context.Context, spec vmm.Spec) (vmm.Machine, vmm.Launch, error) {
	if d.OnStart != nil {
		d.OnStart(spec)
	}
	d.mu.Lock()
	d.specs = append(d.specs, spec)
	d.mu.Unlock()
	l := vmm.Launch{Notes: []string{"fake note"}, AgentSocket: filepath.Join(spec.RunDir, "agent.sock"), APISocket: filepath.Join(spec.RunDir, "api.sock")}
	if d.StartErr != nil {
		return nil, l, d.StartErr
	}
	if err := ctx.Err(); err != nil {
		return nil, l, err
	}
	var restored *Saved
	if spec.Restore != nil {
		var err error
		if restored, err = d.load(spec); err != nil {
			return nil, l, err
		}
		l.Restored = true
	}
	if err := os.WriteFile(d.ConsoleLog(spec.RunDir), []byte("fake console of "+spec.Name+"\n"), 0o600); err != nil {
		return nil, l, err
	}
	ln, err := net.Listen("unix", l.AgentSocket)
	if err != nil {
		return nil, l, fmt.Errorf("fake vmm: %w", err)
	}
	d.mu.Lock()
	if d.machines == nil {
		d.machines, d.nextPID = map[int]*Machine{}, 1<<22
	}
	d.nextPID++
	m := &Machine{pid: d.nextPID, start: uint64(d.nextPID) * 7, dir: spec.RunDir, name: spec.Name, d: d, restored: restored, emulated: spec.Emulate, done: make(chan struct{}), served: make(chan struct{})}
	d.machines[m.pid] = m
	d.mu.Unlock()
	m.link = vmm.PerStream(func(ctx context.Context) (net.Conn, error) {
		var dl net.Dialer
		return dl.DialContext(ctx, "unix", l.AgentSocket)
	})
	actx, cancel := context.WithCancel(context.Background())
	m.stopAgent = cancel
	go func() {
		defer close(m.served)
		_ = agent.Serve(actx, ln, agent.Options{
			Ready:    func() bool { return !d.NotReady },
			Uptime:   func() (time.Duration, error) { return time.Second, nil },
			PowerOff: func() error { m.powerOff(); return nil },
			Resume:   d.Resume,
			Version:  d.AgentVersion,
		})
	}()
	if d.ExitAtBoot {
		m.Exit()
	}
	return m, l, nil
}

// Adopt finds a machine this driver started that still runs.
func (d *Driver) Adopt(a vmm.Adoption) (vmm.Machine, error) {
	d.mu.Lock()
	m := d.machines[a.PID]
	d.mu.Unlock()
	if m == nil || m.start != a.StartTime || m.dir != a.RunDir {
		return nil, errors.New("fake vmm: not ours")
	}
	select {
	case <-m.done:
		return nil, errors.New("fake vmm: not running")
	default:
	}
	return m, nil
}

// ConsoleLog is runDir/console.log.
func (d *Driver) ConsoleLog(runDir string) string { return filepath.Join(runDir, "console.log") }

// OwnsCommandLine: a fake VMM is no process.
func (d *Driver) OwnsCommandLine([]string, string) bool { return false }

// Cleanup keeps nothing outside the run dir.
func (d *Driver) Cleanup(string) int { return 0 }

// Sweep leaves nothing host-wide.
func (d *Driver) Sweep() []string { return nil }

// Machine is a fake VMM process.
type Machine struct {
	pid      int
	start    uint64
	dir      string
	name     string
	d        *Driver
	link     vmm.PerStream
	restored *Saved // what Start resumed, nil when it booted
	emulated bool   // the Spec's Emulate: a saved state says so

	mu        sync.Mutex
	done      chan struct{}
	served    chan struct{}
	stopAgent context.CancelFunc
	stoppedBy string
	paused    bool
	saves     int
	stops     int
	lastCtx   error // the Stop context's error when Stop was called
}

func (m *Machine) PID() int              { return m.pid }
func (m *Machine) Name() string          { return m.name }
func (m *Machine) StartTime() uint64     { return m.start }
func (m *Machine) Done() <-chan struct{} { return m.done }
func (m *Machine) Logs() []string        { return []string{m.d.ConsoleLog(m.dir)} }
func (m *Machine) Agent() vmm.AgentLink  { return m.link }

// StoppedBy says how the machine ended, "" while it runs.
func (m *Machine) StoppedBy() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.stoppedBy
}

// Stops returns how many times Stop was called and the error its context
// had at the last call (a done context asks to kill at once).
func (m *Machine) Stops() (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.stops, m.lastCtx
}

// end ends the machine once, recording how.
func (m *Machine) end(how string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	select {
	case <-m.done:
		return
	default:
	}
	m.stoppedBy = how
	m.stopAgent()
	close(m.done)
}

// Exit makes the VMM exit on its own, as a crash or a poweroff inside the
// guest does.
func (m *Machine) Exit() { m.end(StoppedExit) }

func (m *Machine) powerOff() {
	if m.d.IgnorePowerOff {
		return
	}
	// After the agent's answer, as a guest powers off after acknowledging.
	go m.end(StoppedGraceful)
}

// Stop runs graceful, waits a little for the machine to end, then kills
// it; a done ctx kills at once.
func (m *Machine) Stop(ctx context.Context, graceful func(context.Context) error) error {
	m.mu.Lock()
	m.stops++
	m.lastCtx = ctx.Err()
	m.mu.Unlock()
	if ctx.Err() == nil && graceful != nil {
		if err := graceful(ctx); err == nil {
			wait := m.d.Escalate
			if wait == 0 {
				wait = 200 * time.Millisecond
			}
			select {
			case <-m.done:
			case <-time.After(wait):
			}
		}
	}
	m.end(StoppedKill)
	<-m.served
	return nil
}

// CanSave returns CanSaveErr.
func (d *Driver) CanSave() error { return d.CanSaveErr }
