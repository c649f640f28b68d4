package doctor

import (
	"strings"

	"banger/internal/hostprobe"
)

const (
	fixKVMMissing = "load KVM: `sudo modprobe kvm_intel` (or kvm_amd), with virtualisation enabled in the firmware; in a VM, enable nested virtualisation"
	fixKVMAccess  = "add yourself to the kvm group: `sudo usermod -aG kvm $USER`, then log in again"
	fixKVMPVM     = "nothing to do for QEMU under TCG (vmm = \"auto\" picks it); for hardware virtualisation run banger where /dev/kvm comes from kvm_intel or kvm_amd (bare metal, or a VM with nested virtualisation)"
	fixQEMU       = "install QEMU: `sudo apt install qemu-system-x86`, or set qemu_bin to a qemu-system-x86_64"
)

var fixFirecracker = "install Firecracker " + hostprobe.TestedFirecracker + " from its release page and put it on PATH, or set firecracker_bin"

// checkKVM says plainly what can boot on this host.
func checkKVM(k hostprobe.KVM) Result {
	const tcgOnly = "QEMU under TCG only (slow), no Firecracker: "
	switch k.State {
	case hostprobe.KVMUsable:
		return ok("kvm", "Firecracker and QEMU with KVM: %s", k.Reason)
	case hostprobe.KVMPVM:
		return warn("kvm", fixKVMPVM, "%s%s", tcgOnly, k.Reason)
	case hostprobe.KVMNoAccess:
		return warn("kvm", fixKVMAccess, "%s%s", tcgOnly, k.Reason)
	}
	return warn("kvm", fixKVMMissing, "%s%s", tcgOnly, k.Reason)
}

func checkFirecracker(b hostprobe.Binary) Result {
	switch {
	case b.Err != nil && b.Setting != "":
		return warn("firecracker", "correct firecracker_bin, or remove it to use firecracker from PATH",
			"%v: auto uses QEMU instead", b.Err)
	case b.Err != nil:
		return warn("firecracker", fixFirecracker, "not found (%v): auto uses QEMU instead", b.Err)
	case b.VersionErr != nil:
		return warn("firecracker", fixFirecracker, "%s found, but its version cannot be told: %v", b.Path, b.VersionErr)
	case b.TooOld:
		return warn("firecracker", fixFirecracker, "%s is Firecracker %s, older than %s, the oldest banger drives (tested with %s)",
			b.Path, b.Version, hostprobe.MinFirecracker, hostprobe.TestedFirecracker)
	}
	return ok("firecracker", "%s is Firecracker %s (banger needs %s or later, and is tested with %s)",
		b.Path, b.Version, hostprobe.MinFirecracker, hostprobe.TestedFirecracker)
}

func checkQEMU(b hostprobe.Binary) Result {
	switch {
	case b.Err != nil && b.Setting != "":
		return warn("qemu", "correct qemu_bin, or remove it to use qemu-system-x86_64 from PATH", "%v", b.Err)
	case b.Err != nil:
		return warn("qemu", fixQEMU, "not found (%v)", b.Err)
	case b.VersionErr != nil:
		// A QEMU that cannot even print its version will not boot a VM.
		return warn("qemu", fixQEMU, "%s found, but it does not run: %v", b.Path, b.VersionErr)
	}
	return ok("qemu", "%s is QEMU %s", b.Path, b.Version)
}

// checkVMM says which VMM `vm start` will use, by the daemon's rules
// (hostprobe.ChooseVMM) and in its words.
func checkVMM(want string, f hostprobe.Facts) Result {
	kind, reason, err := hostprobe.ChooseVMM(want, f)
	switch {
	case err != nil && want == hostprobe.VMMFirecracker && !f.Firecracker.Found():
		return fail("vmm", fixFirecracker+`; or set vmm = "auto"`, "%v", err)
	case err != nil && want == hostprobe.VMMFirecracker && f.KVM.State == hostprobe.KVMPVM:
		return fail("vmm", `set vmm = "auto" (or "qemu"): only QEMU under TCG boots on this host`, "%v", err)
	case err != nil && want == hostprobe.VMMFirecracker:
		return fail("vmm", `make /dev/kvm usable (see the kvm check), or set vmm = "qemu"`, "%v", err)
	case err != nil:
		return fail("vmm", `set vmm = "auto"`, "%v", err)
	case kind == hostprobe.VMMFirecracker && want == hostprobe.VMMFirecracker:
		return ok("vmm", "vmm = firecracker: %s with %s", f.Firecracker.Path, hostprobe.KVMDevice)
	case kind == hostprobe.VMMFirecracker:
		return ok("vmm", "auto picks firecracker: %s", strings.TrimPrefix(reason, "auto: "))
	}
	// QEMU, which the daemon does not look for before it starts it.
	q := f.QEMU
	if want == hostprobe.VMMQEMU {
		if !q.Found() {
			return fail("vmm", fixQEMU+`; or set vmm = "auto"`, "vmm = qemu, but %v", q.Err)
		}
		if accel, why := hostprobe.ChooseAccel(f); accel == hostprobe.AccelKVM {
			return ok("vmm", "vmm = qemu: %s with KVM: %s", q.Path, why)
		} else {
			return ok("vmm", "vmm = qemu: %s, under %s", q.Path, why)
		}
	}
	why := strings.TrimPrefix(reason, "auto: ")
	if !q.Found() {
		return fail("vmm", fixQEMU+"; or install Firecracker and make /dev/kvm usable",
			"no VMM can run: %s, and %v", why, q.Err)
	}
	return ok("vmm", "auto picks qemu (%s): %s", q.Path, why)
}
