package fcproc

import (
	"banger/internal/hostprobe"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"banger/internal/daemon/vmm"
	"banger/internal/guest/boot"
	"banger/internal/guest/client"
	"banger/internal/guest/proto"
)

// DriverConfig is what the Firecracker driver takes from bangerd's config.
type DriverConfig struct {
	// Binary is firecracker_bin: empty looks firecracker up on PATH.
	Binary string
	// JailerBin is jailer_bin: empty takes the jailer beside firecracker
	// or on PATH.
	JailerBin string
	// JailBase is the directory that holds the jails' chroots, on the
	// filesystem of the VMs' disks (which are hard-linked into it).
	JailBase string
}

// Driver runs VMs under Firecracker: vmm.Driver.
type Driver struct{ cfg DriverConfig }

// NewDriver is the Firecracker driver for cfg.
func NewDriver(cfg DriverConfig) *Driver { return &Driver{cfg: cfg} }

var _ vmm.Driver = (*Driver)(nil)

// Name is "firecracker".
func (d *Driver) Name() string { return vmm.Firecracker }

// FindBinary finds firecracker as hostprobe does (the rule doctor shows):
// bin (the config's firecracker_bin, an executable file) when set, else on
// PATH.
func FindBinary(bin string) (string, error) {
	b := hostprobe.FindFirecracker(hostprobe.System(), bin)
	return b.Path, b.Err
}

// Usable needs a firecracker binary and a usable /dev/kvm.
// The rule is hostprobe's, the one doctor shows.
func (d *Driver) Usable(h vmm.Host) (string, error) {
	_, why, err := hostprobe.ChooseVMM(hostprobe.VMMFirecracker, h)
	return strings.TrimPrefix(why, "asked for; "), err
}

// UserNetwork is false: Firecracker has no user-mode network, so a VM off
// the bridge is reached through its agent only.
func (d *Driver) UserNetwork() bool { return false }

// Start configures and starts Firecracker for spec. Under a root bangerd
// (spec.Credential set) it runs jailed when a jailer is installed.
func (d *Driver) Start(ctx context.Context, spec vmm.Spec) (vmm.Machine, vmm.Launch, error) {
	var l vmm.Launch
	bin, err := FindBinary(d.cfg.Binary)
	if err != nil {
		return nil, l, err
	}
	g := spec.Guest
	g.Transport = boot.TransportVsock
	cfg := Config{
		Name: spec.Name, Binary: bin, Dir: spec.RunDir, Kernel: spec.Kernel, Initrd: spec.Initrd,
		BootArgs: "console=ttyS0 reboot=k pci=off " + spec.KernelArgs(g), VCPUs: spec.VCPUs,
		MemoryMiB: spec.MemoryMiB, Drives: fcDrives(spec.Drives), VsockCID: 3, Logger: spec.Log,
	}
	if spec.Net.Tap != "" {
		cfg.Net = &NetConfig{Tap: spec.Net.Tap, MAC: spec.Net.MAC}
	}
	if spec.Restore != nil {
		return d.restore(ctx, spec, cfg)
	}
	if c := spec.Credential; c != nil {
		var why string
		if cfg.Jail, why, err = decideJail(cfg, d.cfg.JailerBin, d.cfg.JailBase, c.Uid, c.Gid); err != nil {
			return nil, l, err
		}
		l.Notes = append(l.Notes, why)
		if spec.Log != nil {
			spec.Log.Info("firecracker confinement", "vm", spec.Name, "jailer", cfg.Jail != nil, "why", why)
		}
	}
	l.AgentSocket, l.APISocket = VsockPath(spec.RunDir), APISocketPath(spec.RunDir)
	p, err := Start(ctx, cfg)
	if err != nil {
		return nil, l, err
	}
	return machine{p, vsockLink(l.AgentSocket)}, l, nil
}

func fcDrives(paths []string) []DriveConfig {
	ds := make([]DriveConfig, 0, len(paths))
	for i, p := range paths {
		if i == 0 {
			ds = append(ds, DriveConfig{ID: "root", Path: p, Root: true})
			continue
		}
		ds = append(ds, DriveConfig{ID: fmt.Sprintf("disk%d", i), Path: p})
	}
	return ds
}

// vsockLink dials Firecracker's hybrid vsock once per stream.
func vsockLink(socket string) vmm.PerStream {
	return func(ctx context.Context) (net.Conn, error) {
		return client.DialFirecracker(ctx, socket, proto.DefaultPort)
	}
}

// Adopt re-attaches to a Firecracker found running.
func (d *Driver) Adopt(a vmm.Adoption) (vmm.Machine, error) {
	p, err := Adopt(a.PID, a.StartTime, a.RunDir)
	if err != nil {
		return nil, err
	}
	return machine{p, vsockLink(a.AgentSocket)}, nil
}

// ConsoleLog is runDir/console.log.
func (d *Driver) ConsoleLog(runDir string) string { return ConsoleLogPath(runDir) }

// OwnsCommandLine is IsCommandLineOf.
func (d *Driver) OwnsCommandLine(args []string, runDir string) bool {
	return IsCommandLineOf(args, runDir)
}

// Cleanup is CleanupJail.
func (d *Driver) Cleanup(runDir string) int { return CleanupJail(runDir) }

// Sweep removes the idle chroots under JailBase.
func (d *Driver) Sweep() []string {
	if d.cfg.JailBase == "" {
		return nil
	}
	return SweepJails(d.cfg.JailBase)
}

// machine is a Firecracker process as a vmm.Machine.
type machine struct {
	p    *Process
	link vmm.PerStream
}

func (m machine) PID() int              { return m.p.PID }
func (m machine) StartTime() uint64     { return m.p.StartTime }
func (m machine) Done() <-chan struct{} { return m.p.Done() }
func (m machine) Logs() []string        { return []string{ConsoleLogPath(m.p.Dir)} }
func (m machine) Agent() vmm.AgentLink  { return m.link }
func (m machine) Stop(ctx context.Context, g func(context.Context) error) error {
	return m.p.Stop(ctx, g)
}

// decideJail decides whether a Firecracker VM runs under the jailer, and
// says why in words for the VMM reason. It needs a root bangerd (the
// jailer changes uid and makes device nodes), a jailer (jailerBin, the
// config's jailer_bin; else one beside firecracker or on PATH), and a VM
// name that keeps the chroot's socket paths short enough. A bridged VM's
// tap is handed to the jail's uid by Start. uid and gid are the VM's VMM
// user. A jailer_bin that is not an executable file is an error: the user
// asked for the jail.
func decideJail(cfg Config, jailerBin, base string, uid, gid uint32) (*Jail, string, error) {
	if os.Geteuid() != 0 {
		return nil, "no jailer: bangerd is not root", nil
	}
	jailer, ok := jailerBin, true
	if jailer != "" {
		if fi, err := os.Stat(jailer); err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
			return nil, "", fmt.Errorf("jailer_bin %s is not an executable file: install Firecracker's jailer there, or remove jailer_bin", jailer)
		}
	} else if jailer, ok = JailerPath(cfg.Binary); !ok {
		return nil, "no jailer installed: Firecracker runs as root with its seccomp filters only", nil
	}
	j := &Jail{Binary: jailer, UID: uid, GID: gid, BaseDir: filepath.Clean(base)}
	if err := JailFits(cfg, *j); err != nil {
		return nil, "jailer not used: " + err.Error(), nil
	}
	return j, "jailed by " + jailer + " as uid " + strconv.FormatUint(uint64(uid), 10), nil
}
