package hostprobe

import "fmt"

// VMM kinds, and the "auto" a config or request may ask for.
const (
	Auto           = "auto"
	VMMFirecracker = "firecracker"
	VMMQEMU        = "qemu"
)

// QEMU accelerators.
const (
	AccelKVM = "kvm"
	AccelTCG = "tcg"
)

// Root disk strategies (the config's cow).
const (
	COWDMSnap  = "dmsnap"
	COWReflink = "reflink"
	COWCopy    = "copy"
)

// noKVMNote ends the reason of a QEMU chosen without usable KVM.
const noKVMNote = " (QEMU runs without it, under TCG: slower)"

// ChooseVMM resolves want ("auto", "" or a VMM kind) to the VMM bangerd
// starts, and says why in the words bangerd shows in `vm inspect` and doctor
// repeats. Firecracker needs its binary and a usable /dev/kvm (a kvm_pvm
// one is not: its guest never boots); auto falls back to QEMU, which
// runs under TCG where KVM is not usable. An explicit Firecracker that
// cannot run is an error saying what to do.
func ChooseVMM(want string, f Facts) (kind, reason string, err error) {
	fc, kvm := f.Firecracker, f.KVM
	switch want {
	case VMMFirecracker:
		if !fc.Found() {
			return "", "", fmt.Errorf("vmm is firecracker but %v", fc.Err)
		}
		if !kvm.Usable() {
			return "", "", fmt.Errorf("vmm is firecracker but %s; use vmm = \"qemu\" or --vmm qemu", kvm.Reason)
		}
		return VMMFirecracker, "asked for; " + fc.Path + " with " + KVMDevice, nil
	case VMMQEMU:
		if !kvm.Usable() {
			return VMMQEMU, "asked for; " + kvm.Reason + noKVMNote, nil
		}
		return VMMQEMU, "asked for", nil
	case "", Auto:
		switch {
		case fc.Found() && kvm.Usable():
			return VMMFirecracker, "auto: " + fc.Path + " is installed and " + KVMDevice + " is usable", nil
		case !fc.Found() && kvm.Usable():
			return VMMQEMU, "auto: " + fc.Err.Error(), nil
		case !fc.Found():
			return VMMQEMU, "auto: " + fc.Err.Error() + "; " + kvm.Reason + noKVMNote, nil
		default:
			return VMMQEMU, "auto: " + kvm.Reason + noKVMNote, nil
		}
	}
	return "", "", fmt.Errorf("unknown vmm %q: use auto, firecracker or qemu", want)
}

// ChooseAccel is the accelerator QEMU gets: KVM where /dev/kvm is usable,
// else TCG software emulation, decided here so that QEMU is never tried
// with a KVM it cannot use (a kvm_pvm one makes it abort).
func ChooseAccel(f Facts) (accel, reason string) {
	if f.KVM.Usable() {
		return AccelKVM, f.KVM.Reason
	}
	return AccelTCG, "TCG software emulation (slow): " + f.KVM.Reason
}

// ChooseCOW resolves the config's cow for a new VM's root disk: dmsnap when
// bangerd can make device-mapper snapshots (itself as root, or through the
// helper), else a reflink clone where the state dir supports it, else a
// sparse copy. kind is COWDMSnap, COWReflink, COWCopy, or Auto when reflink
// could not be tested (the clone then tries it and falls back to a copy).
// A strategy asked for that cannot work here is an error saying what to do.
func ChooseCOW(want string, f Facts) (kind, reason string, err error) {
	rl := f.Reflink
	switch want {
	case COWCopy:
		return COWCopy, "cow = copy: each VM disk is a sparse copy of its image", nil
	case COWDMSnap:
		if !f.Snapshots.Usable {
			return "", "", fmt.Errorf("cow = dmsnap: %v; or use cow = auto, reflink or copy", f.Snapshots.why())
		}
		return COWDMSnap, "cow = dmsnap: each VM disk is a device-mapper snapshot of its image", nil
	case COWReflink:
		switch {
		case rl.Supported:
			return COWReflink, fmt.Sprintf("cow = reflink: %s (%s) supports it", rl.At, rl.FS), nil
		case !rl.tested():
			return COWReflink, fmt.Sprintf("cow = reflink, and whether the state dir supports it cannot be told: %v", rl.untested()), nil
		}
		return "", "", fmt.Errorf("cow = reflink, but %s (%s) does not support reflink clones; use cow = auto or copy, or a state_dir on btrfs or XFS", rl.At, rl.FS)
	case "", Auto:
		switch {
		case f.Snapshots.Usable:
			return COWDMSnap, "auto picks dmsnap: device-mapper and loop devices are usable", nil
		case rl.Supported:
			return COWReflink, fmt.Sprintf("auto picks reflink: %s (%s) supports clones", rl.At, rl.FS), nil
		case !rl.tested():
			return Auto, fmt.Sprintf("auto tries reflink and falls back to copy (reflink could not be tested: %v)", rl.untested()), nil
		}
		return COWCopy, fmt.Sprintf("auto picks copy: no usable device-mapper, and %s (%s) does not support reflink clones", rl.At, rl.FS), nil
	}
	return "", "", fmt.Errorf("unknown cow %q: use auto, dmsnap, reflink or copy", want)
}
