package vmm

import (
	"banger/internal/guest/boot"
	"banger/internal/hostprobe"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"syscall"
	"time"
)

// Names of the drivers banger ships.
const (
	Firecracker = "firecracker"
	QEMU        = "qemu"
)

// Host is the facts about this host a driver's Usable looks at, probed
// once by the caller through internal/hostprobe (the one probe bangerd and
// doctor share).
type Host = hostprobe.Facts

// Spec is one VM to start, whichever VMM runs it.
type Spec struct {
	ID     string // the VM's id: picks its VMM user
	Name   string // the VM's name: some VMMs show it (Firecracker's --id)
	RunDir string // exists and is empty; sockets and logs go there
	Kernel string // uncompressed vmlinux
	Initrd string // optional
	// Params are the guest kernel parameters every VMM passes that are
	// not the agent's (root=, init=); a driver adds its own (console).
	Params []string
	// Guest is the agent's settings, passed as banger.* parameters; a
	// driver sets its transport and, on a user-mode network of its own,
	// the addresses. KernelArgs joins both.
	Guest     boot.Settings
	VCPUs     int
	MemoryMiB int
	// Drives are disk images or devices; the first is the root (/dev/vda).
	Drives []string
	Net    Net
	// Emulate says the host probe found no usable KVM: a VMM that can
	// runs under software emulation from the start, one that cannot was
	// not chosen.
	Emulate bool
	// Credential, when set, runs the VMM as that user.
	Credential *syscall.Credential
	// Log receives the driver's records about this VM.
	Log *slog.Logger
	// Restore, when set, resumes a saved guest instead of booting one
	// (snapshot.go). A driver whose VMM cannot refuses it.
	Restore *Restore
}

// Net is a VM's network: a tap on the host's bridge, or (Tap empty) the
// VMM's own user-mode network, which forwards host ports to the guest
// where the VMM has one.
type Net struct {
	Tap      string
	MAC      string
	Forwards []Forward // user mode only; guest port 22 is always forwarded
}

// Forward is a host TCP port forwarded to a guest port; host port 0 picks
// a free one.
type Forward struct {
	HostPort  int
	GuestPort int
}

// Launch is what a start made known, set as far as it got even when the
// start fails.
type Launch struct {
	// Notes add to the VMM's reason shown by vm inspect (the jail, an
	// accelerator fallback).
	Notes       []string
	AgentSocket string
	APISocket   string
	SSHPort     int // the host port forwarded to guest port 22, or 0
	// Emulated is true when the guest runs without hardware
	// virtualisation, so it boots far slower.
	Emulated bool
	// Restored is true when the guest was resumed from Spec.Restore
	// rather than booted.
	Restored bool
}

// Adoption identifies a VMM process found running after a daemon restart.
type Adoption struct {
	PID         int
	StartTime   uint64 // field 22 of /proc/PID/stat
	RunDir      string
	AgentSocket string
}

// Driver is one VMM as the daemon sees it.
type Driver interface {
	// Name is the VMM's name in the config, the store and vm inspect.
	Name() string
	// Usable says why this VMM cannot run VMs on host, or nil; what says
	// what it would use when it can.
	Usable(host Host) (what string, err error)
	// UserNetwork says whether the VMM has a network of its own for a VM
	// off the host's bridge (with Net.Forwards); without one such a VM is
	// reached through its agent only.
	UserNetwork() bool
	// Start launches spec's VM and waits until its VMM runs (not until
	// the guest has booted). On failure nothing of the VMM is left
	// running.
	Start(ctx context.Context, spec Spec) (Machine, Launch, error)
	// Adopt re-attaches to a VMM of this driver found running.
	Adopt(a Adoption) (Machine, error)
	// ConsoleLog is where the guest's console goes, under runDir.
	ConsoleLog(runDir string) string
	// OwnsCommandLine says whether a process with args is a VMM of this
	// driver for runDir (to kill strays that no pid record names).
	OwnsCommandLine(args []string, runDir string) bool
	// Cleanup removes what a VMM of runDir keeps outside it (Firecracker's
	// jail), killing processes still in there; it returns how many.
	Cleanup(runDir string) int
	// Sweep removes host-wide leftovers of VMMs that no longer run and
	// returns what it removed.
	Sweep() []string
}

// Machine is one running VMM process.
type Machine interface {
	PID() int
	StartTime() uint64
	// Done is closed once the process has exited.
	Done() <-chan struct{}
	// Stop stops the VMM: graceful (when not nil) first, then the VMM's
	// own escalation, each bounded; a done ctx skips to killing it.
	Stop(ctx context.Context, graceful func(context.Context) error) error
	// Logs are the files the VMM appends guest output to, which the
	// daemon keeps bounded while the VM runs.
	Logs() []string
	// Agent reaches the guest agent.
	Agent() AgentLink
}

// Registry holds the drivers by name.
type Registry map[string]Driver

// NewRegistry registers drivers under their names.
func NewRegistry(ds ...Driver) Registry {
	r := Registry{}
	for _, d := range ds {
		r[d.Name()] = d
	}
	return r
}

// ErrUnknown is the error of Get for a name no driver has.
var ErrUnknown = errors.New("unknown vmm")

// Get returns the driver called name.
func (r Registry) Get(name string) (Driver, error) {
	if d, ok := r[name]; ok {
		return d, nil
	}
	return nil, fmt.Errorf("%w %q: use auto, %s", ErrUnknown, name, strings.Join(r.Names(), " or "))
}

// Names lists the registered names, sorted.
func (r Registry) Names() []string {
	ns := make([]string, 0, len(r))
	for n := range r {
		ns = append(ns, n)
	}
	sort.Strings(ns)
	return ns
}

// Has says whether name is registered.
func (r Registry) Has(name string) bool { _, ok := r[name]; return ok }

// Boot bounds: how long a guest may take to answer once its VMM runs.
const (
	BootTimeoutKVM = 60 * time.Second
	BootTimeoutTCG = 180 * time.Second
)

// BootTimeout is the bound for a launch.
func (l Launch) BootTimeout() time.Duration {
	if l.Emulated {
		return BootTimeoutTCG
	}
	return BootTimeoutKVM
}

// KernelArgs is the guest kernel command line of s with g as the agent's
// settings: Params, then g's banger.* parameters.
func (s Spec) KernelArgs(g boot.Settings) string {
	return strings.Join(append(slices.Clone(s.Params), g.Cmdline()), " ")
}
