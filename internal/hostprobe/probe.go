package hostprobe

import "context"

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
	// Snapshots is why bangerd cannot make dm snapshots (Options.Snapshots'
	// answer, else DM.Err), or nil when it can.
	Snapshots error
	Reflink   Reflink
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
	f.Snapshots = snapshotsFrom(ctx, o.Snapshots, f.DM)
	return f
}
