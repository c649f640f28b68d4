package daemon

import (
	"errors"
	"fmt"
	"os"

	"banger/internal/daemon/fcproc"
	"banger/internal/daemon/vmm"
)

// vmmAuto asks for the best VMM this host can run.
const vmmAuto = "auto"

// probeHost gathers the facts the drivers' Usable looks at.
func probeHost(firecrackerBin string) vmm.Host {
	fc, fcErr := fcproc.FindBinary(firecrackerBin)
	return vmm.Host{Firecracker: fc, FirecrackerErr: fcErr, KVM: kvmUsable()}
}

// chooseVMM resolves want (a driver's name, or auto) to a driver usable on
// host, and says why: auto takes Firecracker when it is usable, else QEMU.
func chooseVMM(want string, host vmm.Host, drivers vmm.Registry) (vmm.Driver, string, error) {
	if want == "" || want == vmmAuto {
		fc, err := drivers.Get(vmm.Firecracker)
		if err == nil {
			_, err = fc.Usable(host)
		}
		if err == nil {
			return fc, "auto: " + host.Firecracker + " is installed and /dev/kvm is usable", nil
		}
		q, qerr := drivers.Get(vmm.QEMU)
		switch {
		case qerr != nil:
			return nil, "", fmt.Errorf("vmm = auto: %v, and %w", err, qerr)
		case host.FirecrackerErr != nil:
			return q, "auto: " + host.FirecrackerErr.Error(), nil
		}
		return q, "auto: " + err.Error() + " (QEMU runs without it, slower)", nil
	}
	d, err := drivers.Get(want)
	if err != nil {
		return nil, "", err
	}
	what, err := d.Usable(host)
	if err != nil {
		if host.KVM != nil && err == host.KVM {
			return nil, "", fmt.Errorf("vmm is %s but %v; use vmm = \"qemu\" or --vmm qemu", want, err)
		}
		return nil, "", fmt.Errorf("vmm is %s but %v", want, err)
	}
	return d, "asked for; " + what, nil
}

// kvmUsable says why this user cannot open /dev/kvm, or nil.
func kvmUsable() error {
	f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return errors.New("/dev/kvm does not exist")
		}
		return fmt.Errorf("/dev/kvm is not usable by this user (%v)", err)
	}
	f.Close()
	return nil
}
