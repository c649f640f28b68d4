package qemuproc

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// kvmGetAPIVersion is the KVM_GET_API_VERSION ioctl; a working KVM answers 12.
const (
	kvmGetAPIVersion = 0xAE00
	kvmAPIVersion    = 12
)

// kvmUsable says whether dev is a KVM device this process can use: it opens
// read-write and answers KVM_GET_API_VERSION with 12. The reason says why
// not, or what was found.
func kvmUsable(dev string) (bool, string) {
	f, err := os.OpenFile(dev, os.O_RDWR, 0)
	if err != nil {
		switch {
		case errors.Is(err, os.ErrNotExist):
			return false, dev + " does not exist (no KVM on this host, or the kvm module is not loaded)"
		case errors.Is(err, os.ErrPermission):
			return false, dev + " is not writable by this user (add it to the kvm group)"
		}
		return false, fmt.Sprintf("%s cannot be opened read-write: %v", dev, err)
	}
	defer f.Close()
	v, err := unix.IoctlRetInt(int(f.Fd()), kvmGetAPIVersion)
	if err != nil {
		return false, fmt.Sprintf("%s does not answer KVM_GET_API_VERSION (%v); it is not a KVM device", dev, err)
	}
	if v != kvmAPIVersion {
		return false, fmt.Sprintf("%s speaks KVM API version %d, not %d", dev, v, kvmAPIVersion)
	}
	return true, dev + " opens read-write and answers KVM API version 12"
}

// chooseAccel resolves want against the KVM device dev.
func chooseAccel(want Accel, dev string) (Accel, string, error) {
	ok, why := kvmUsable(dev)
	switch want {
	case AccelKVM:
		if !ok {
			return "", "", fmt.Errorf("KVM was asked for but %s; use accel \"tcg\" or \"auto\" to run under software emulation", why)
		}
		return AccelKVM, "asked for kvm; " + why, nil
	case AccelTCG:
		return AccelTCG, "asked for tcg (software emulation)", nil
	default:
		if ok {
			return AccelKVM, "auto: " + why, nil
		}
		return AccelTCG, "auto: " + why + "; using TCG software emulation (slow)", nil
	}
}
