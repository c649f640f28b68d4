package qemuproc

import (
	"fmt"

	"banger/internal/hostprobe"
)

// chooseAccel resolves want against what hostprobe found of KVM (the one
// probe bangerd and doctor share: it knows a kvm_pvm /dev/kvm, on which
// QEMU with KVM aborts, from a usable one).
func chooseAccel(want Accel, kvm hostprobe.KVM) (Accel, string, error) {
	switch want {
	case AccelKVM:
		if !kvm.Usable() {
			return "", "", fmt.Errorf("KVM was asked for but %s; use accel \"tcg\" or \"auto\" to run under software emulation", kvm.Reason)
		}
		return AccelKVM, "asked for kvm; " + kvm.Reason, nil
	case AccelTCG:
		return AccelTCG, "asked for tcg (software emulation)", nil
	default:
		if kvm.Usable() {
			return AccelKVM, "auto: " + kvm.Reason, nil
		}
		return AccelTCG, "auto: " + kvm.Reason + "; using TCG software emulation (slow)", nil
	}
}
