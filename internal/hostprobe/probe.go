package hostprobe

import (
	"context"
	"fmt"
)

// Options says where and what to probe.
type Options struct {
	Host Host
	// FirecrackerBin and QemuBin are the config's firecracker_bin and
	// qemu_bin ("" = look on PATH).
	FirecrackerBin, QemuBin string
	// StateDir is where reflink clones are tested; "" leaves the test out
	// (Facts.Reflink.Err then says so).
	StateDir string
	// Versions runs `--version` of the binaries found (doctor does; the
	// daemon needs only their paths).
	Versions bool
	// Snapshots asks whoever makes bangerd's dm snapshots whether it can
	// (the privileged helper, for a user's bangerd); nil means this
	// process, probed here.
	Snapshots func(context.Context) error
}

// Facts is what this host offers banger. The choice rules (ChooseVMM,
// ChooseAccel, ChooseCOW) read nothing else.
type Facts struct {
	UID         int
	Firecracker Binary
	QEMU        Binary
	KVM         KVM
	TUN         TUN
	// DM is device-mapper as this process sees it here.
	DM DeviceMapper
	// Snapshots is whether bangerd can make dm snapshots
	// (Options.Snapshots' answer, else DM).
	Snapshots Snapshots
	// Reflink is the state dir's reflink test; its zero value means not
	// tested.
	Reflink Reflink
}

// Snapshots is whether bangerd can make device-mapper snapshots. The zero
// value says it cannot (not asked), so Facts built by hand never pick
// dmsnap by mistake.
type Snapshots struct {
	Usable bool
	// Err is why not, when it was asked.
	Err error
}

// SnapshotsFrom turns the answer of a check (nil: it can) into Snapshots.
func SnapshotsFrom(err error) Snapshots { return Snapshots{Usable: err == nil, Err: err} }

// why is the reason snapshots cannot be made.
func (s Snapshots) why() error {
	if s.Err != nil {
		return s.Err
	}
	return fmt.Errorf("%w: nobody was asked", ErrNoSnapshots)
}

// ProbeVMM finds what the VMM choice needs and nothing else: the two
// binaries and /dev/kvm. It runs no program.
func ProbeVMM(h Host, firecrackerBin, qemuBin string) Facts {
	return Facts{
		UID:         h.UID,
		Firecracker: FindFirecracker(h, firecrackerBin),
		QEMU:        FindQEMU(h, qemuBin),
		KVM:         ProbeKVM(h),
	}
}

// Probe looks at everything once. It never fails as a whole: a probe that
// goes wrong is a fact.
func Probe(ctx context.Context, o Options) Facts {
	h := o.Host
	f := Facts{
		UID:         h.UID,
		Firecracker: FindFirecracker(h, o.FirecrackerBin),
		QEMU:        FindQEMU(h, o.QemuBin),
		KVM:         ProbeKVM(h),
		TUN:         ProbeTUN(h),
		DM:          ProbeDeviceMapper(h),
		Reflink:     ProbeReflink(o.StateDir),
	}
	if o.Versions {
		f.Firecracker.firecrackerVersion(ctx)
		f.QEMU.qemuVersion(ctx)
	}
	if o.Snapshots != nil {
		f.Snapshots = SnapshotsFrom(o.Snapshots(ctx))
	} else {
		f.Snapshots = SnapshotsFrom(f.DM.Err)
	}
	return f
}
