package hostprobe

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// KVMDevice is the KVM device every VMM opens.
const KVMDevice = "/dev/kvm"

// KVMState classifies /dev/kvm.
type KVMState string

// KVM states. Only KVMUsable lets a VMM use hardware virtualisation.
const (
	// KVMUsable: /dev/kvm opens read-write, answers KVM API version 12
	// and comes from a hardware module (kvm_intel, kvm_amd).
	KVMUsable KVMState = "usable"
	// KVMAbsent: there is no /dev/kvm.
	KVMAbsent KVMState = "absent"
	// KVMNoAccess: /dev/kvm exists but this user may not open it.
	KVMNoAccess KVMState = "no-access"
	// KVMPVM: /dev/kvm comes from the kvm_pvm module (PVM, KVM without
	// hardware virtualisation). It opens and answers every cheap ioctl
	// like a real KVM, but QEMU with KVM aborts on it and a Firecracker
	// guest never prints a line: only QEMU under TCG boots.
	KVMPVM KVMState = "pvm"
	// KVMBroken: /dev/kvm exists but cannot be opened for another
	// reason, or is not a KVM device (no answer to KVM_GET_API_VERSION).
	KVMBroken KVMState = "broken"
)

// PVMModule is the module that gives a host without hardware
// virtualisation a /dev/kvm no banger VMM boots on.
const PVMModule = "kvm_pvm"

// KVM is what probing /dev/kvm found.
type KVM struct {
	State KVMState
	// Module is the KVM vendor module found loaded (kvm_intel, kvm_amd,
	// kvm_pvm), or "".
	Module string
	// Reason says, in a plain sentence starting with /dev/kvm, what was
	// found: why it is usable or why not.
	Reason string
}

// Usable reports whether VMMs can use hardware virtualisation.
func (k KVM) Usable() bool { return k.State == KVMUsable }

// Err is nil when KVM is usable, else an error carrying Reason.
func (k KVM) Err() error {
	if k.Usable() {
		return nil
	}
	return errors.New(k.Reason)
}

// pvmReason is the Reason of KVMPVM.
const pvmReason = KVMDevice + " comes from the kvm_pvm module (PVM: KVM without hardware virtualisation), on which QEMU with KVM aborts and a Firecracker guest never boots"

// KVM ioctls: KVM_GET_API_VERSION answers 12 on every KVM since 2007.
const (
	kvmGetAPIVersion = 0xAE00
	kvmAPIVersion    = 12
)

// kvmVendorModules are looked for in this order: a hardware module wins
// over kvm_pvm when both are loaded.
var kvmVendorModules = []string{"kvm_intel", "kvm_amd", PVMModule}

// ProbeKVM classifies /dev/kvm for this user. Opening it is not enough:
// on a host whose /dev/kvm comes from kvm_pvm the open, KVM_GET_API_VERSION,
// KVM_CHECK_EXTENSION, KVM_CREATE_VM and KVM_CREATE_VCPU all succeed, yet
// no guest boots; only the module name tells it apart.
func ProbeKVM(h Host) KVM {
	var k KVM
	for _, m := range kvmVendorModules {
		if h.hasModule(m) {
			k.Module = m
			break
		}
	}
	f, err := os.OpenFile(h.PathOf(KVMDevice), os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		switch {
		case errors.Is(err, os.ErrNotExist):
			k.State, k.Reason = KVMAbsent, KVMDevice+" does not exist"
		case k.Module == PVMModule:
			// Access would not help: telling this user to join the kvm
			// group would only give them a KVM nothing boots on.
			k.State, k.Reason = KVMPVM, pvmReason+fmt.Sprintf(" (nor may this user open it: %v)", errnoOf(err))
		case errors.Is(err, os.ErrPermission):
			k.State, k.Reason = KVMNoAccess, fmt.Sprintf("%s is not usable by this user: %v", KVMDevice, errnoOf(err))
		default:
			k.State, k.Reason = KVMBroken, fmt.Sprintf("%s is not usable by this user: %v", KVMDevice, errnoOf(err))
		}
		return k
	}
	defer f.Close()
	if h.Real() {
		if err := checkKVMAPI(f); err != nil {
			k.State, k.Reason = KVMBroken, err.Error()
			return k
		}
	}
	if k.Module == PVMModule {
		k.State, k.Reason = KVMPVM, pvmReason
		return k
	}
	k.State, k.Reason = KVMUsable, KVMDevice+" opens read-write"
	if k.Module != "" {
		k.Reason += " (" + k.Module + ")"
	}
	return k
}

// checkKVMAPI asks the open device f for its KVM API version.
func checkKVMAPI(f *os.File) error {
	v, err := unix.IoctlRetInt(int(f.Fd()), kvmGetAPIVersion)
	switch {
	case err != nil:
		return fmt.Errorf("%s does not answer KVM_GET_API_VERSION (%v): it is not a KVM device", KVMDevice, err)
	case v != kvmAPIVersion:
		return fmt.Errorf("%s speaks KVM API version %d, not %d", KVMDevice, v, kvmAPIVersion)
	}
	return nil
}
