package daemon

import (
	"fmt"

	"banger/internal/daemon/vmm"
	"banger/internal/hostprobe"
)

// vmmAuto asks for the best VMM this host can run.
const vmmAuto = "auto"

// probeHost gathers the facts the VMM choice looks at, through the probe
// doctor uses too.
func probeHost(firecrackerBin, qemuBin string) vmm.Host {
	return hostprobe.ProbeVMM(hostprobe.System(), firecrackerBin, qemuBin)
}

// chooseVMM resolves want (auto, or a driver's name) to a driver and says
// why. The VMMs banger ships are chosen by hostprobe's rules, the ones
// `banger doctor` shows; a driver hostprobe does not know (a fake in
// tests, a third VMM) answers for itself through Usable.
func chooseVMM(want string, host vmm.Host, drivers vmm.Registry) (vmm.Driver, string, error) {
	switch want {
	case "", vmmAuto, hostprobe.VMMFirecracker, hostprobe.VMMQEMU:
		kind, reason, err := hostprobe.ChooseVMM(want, host)
		if err != nil {
			return nil, "", err
		}
		d, err := drivers.Get(kind)
		if err != nil {
			return nil, "", err
		}
		return d, reason, nil
	}
	d, err := drivers.Get(want)
	if err != nil {
		return nil, "", err
	}
	what, err := d.Usable(host)
	if err != nil {
		return nil, "", fmt.Errorf("vmm is %s but %v", want, err)
	}
	return d, "asked for; " + what, nil
}
