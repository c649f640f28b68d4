package qemuproc

import (
	"banger/internal/hostprobe"
	"context"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"

	"banger/internal/daemon/vmm"
	"banger/internal/guest/boot"
)

// QEMU user-mode networking's fixed addresses, given to the guest agent so
// the guest needs no DHCP client.
var (
	userNetIP  = netip.MustParsePrefix("10.0.2.15/24")
	userNetGW  = netip.MustParseAddr("10.0.2.2")
	userNetDNS = netip.MustParseAddr("10.0.2.3")
)

// Driver runs VMs under QEMU: vmm.Driver. When QEMU fails with a KVM this
// process can open (nested virtualisation missing MSRs), it starts the VM
// again under TCG and remembers why for its later starts.
type Driver struct {
	// Binary is qemu_bin: empty looks DefaultBinary up on PATH.
	Binary string
	// noKVM holds why QEMU could not use this host's KVM, once seen.
	noKVM atomic.Pointer[string]

	// The version VMMVersion last read, and of which file.
	versionMu  sync.Mutex
	versionKey string
	version    string
}

// NewDriver is the QEMU driver running binary.
func NewDriver(binary string) *Driver { return &Driver{Binary: binary} }

var _ vmm.Driver = (*Driver)(nil)

// Name is "qemu".
func (d *Driver) Name() string { return vmm.QEMU }

// Usable: QEMU runs anywhere, under TCG when KVM is not usable.
func (d *Driver) Usable(h vmm.Host) (string, error) {
	if accel, why := hostprobe.ChooseAccel(h); accel != hostprobe.AccelKVM {
		return "QEMU under " + why, nil
	}
	return "QEMU with " + hostprobe.KVMDevice, nil
}

// UserNetwork is true: QEMU forwards host ports into its user-mode network.
func (d *Driver) UserNetwork() bool { return true }

// config is the QEMU configuration of spec, with the guest parameters of
// QEMU's agent transport and (off the bridge) of its user-mode network.
func (d *Driver) config(spec vmm.Spec) Config {
	g := spec.Guest
	g.Transport = boot.TransportSerial
	net := Net{Tap: &Tap{Name: spec.Net.Tap, MAC: spec.Net.MAC}}
	if spec.Net.Tap == "" {
		g.Addr, g.Gateway, g.DNS = userNetIP, userNetGW, []netip.Addr{userNetDNS}
		fwd := []Forward{{GuestPort: 22}}
		for _, f := range spec.Net.Forwards {
			fwd = append(fwd, Forward{HostPort: f.HostPort, GuestPort: f.GuestPort})
		}
		net = Net{User: &User{Forwards: fwd}}
	}
	drives := make([]Drive, 0, len(spec.Drives))
	for _, p := range spec.Drives {
		drives = append(drives, Drive{Path: p})
	}
	return Config{
		Binary: d.Binary, Dir: spec.RunDir, Kernel: spec.Kernel, Initrd: spec.Initrd,
		Cmdline: spec.KernelArgs(g), VCPUs: spec.VCPUs, MemoryMiB: spec.MemoryMiB,
		Drives: drives, Net: net, Credential: spec.Credential,
	}
}

// Start starts QEMU for spec, under TCG when an earlier start saw that
// this host's KVM does not work for QEMU.
func (d *Driver) Start(ctx context.Context, spec vmm.Spec) (vmm.Machine, vmm.Launch, error) {
	var l vmm.Launch
	cfg := d.config(spec)
	if spec.Restore != nil {
		return d.restore(ctx, spec, cfg)
	}
	switch why := d.noKVM.Load(); {
	case spec.Emulate:
		// The host probe says KVM cannot work here (none, or kvm_pvm,
		// on which QEMU with KVM aborts): TCG from the start.
		cfg.Accel = AccelTCG
	case why != nil:
		cfg.Accel = AccelTCG
		l.Notes = append(l.Notes, *why)
	default:
		cfg.Accel = AccelKVM
	}
	p, err := Start(ctx, cfg)
	if err != nil && cfg.Accel == AccelKVM && ctx.Err() == nil {
		// Some hosts expose a /dev/kvm that QEMU cannot drive (nested
		// virtualisation missing MSRs): fall back to TCG, say so, and
		// remember it for later starts.
		if spec.Log != nil {
			spec.Log.Warn("QEMU failed with KVM; retrying under TCG", "vm", spec.Name, "error", err)
		}
		cfg.Accel = AccelTCG
		var err2 error
		if p, err2 = Start(ctx, cfg); err2 == nil {
			why := fmt.Sprintf("QEMU could not use KVM here (%s), so it runs under TCG", firstLine(err.Error()))
			d.noKVM.Store(&why)
			l.Notes = append(l.Notes, why)
		}
		err = err2
	}
	if err != nil {
		return nil, l, fmt.Errorf("start QEMU: %w", err)
	}
	l.AgentSocket, l.APISocket, l.Emulated = p.AgentSocket, p.QMPSocket, p.Accel != AccelKVM
	for _, f := range p.Forwards {
		if f.GuestPort == 22 {
			l.SSHPort = f.HostPort
		}
	}
	return &machine{p: p, link: vmm.NewMux(p.AgentSocket)}, l, nil
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

// Adopt re-attaches to a QEMU found running.
func (d *Driver) Adopt(a vmm.Adoption) (vmm.Machine, error) {
	p, err := Adopt(a.PID, a.StartTime, a.RunDir)
	if err != nil {
		return nil, err
	}
	return &machine{p: p, link: vmm.NewMux(a.AgentSocket)}, nil
}

// ConsoleLog is runDir/console.log.
func (d *Driver) ConsoleLog(runDir string) string { return ConsoleLogPath(runDir) }

// OwnsCommandLine is IsCommandLineOf.
func (d *Driver) OwnsCommandLine(args []string, runDir string) bool {
	return IsCommandLineOf(args, runDir)
}

// Cleanup: QEMU keeps nothing outside its run dir.
func (d *Driver) Cleanup(string) int { return 0 }

// Sweep: QEMU leaves nothing host-wide.
func (d *Driver) Sweep() []string { return nil }

// machine is a QEMU process as a vmm.Machine.
type machine struct {
	p    *Process
	link *vmm.Mux
}

func (m *machine) PID() int              { return m.p.PID }
func (m *machine) StartTime() uint64     { return m.p.StartTime }
func (m *machine) Done() <-chan struct{} { return m.p.Done() }
func (m *machine) Logs() []string        { return []string{m.p.ConsoleLog, m.p.Log} }
func (m *machine) Agent() vmm.AgentLink  { return m.link }
func (m *machine) Stop(ctx context.Context, g func(context.Context) error) error {
	return m.p.Stop(ctx, g)
}
