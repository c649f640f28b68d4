package doctor_test

import (
	"testing"

	"banger/internal/doctor"
)

// TestToolsOfAUsersBangerd: a bangerd that is not root builds the Debian
// image with mmdebstrap (and newuidmap/newgidmap), never debootstrap; doctor
// run as that user must look for what that bangerd runs, not call a host
// without mmdebstrap ready because debootstrap is there.
func TestToolsOfAUsersBangerd(t *testing.T) {
	f := newFakeHost(t)
	for _, p := range []string{"mkfs.ext4", "debootstrap", "apt-get"} {
		f.program(p, "exit 0")
	}
	expect(t, find(t, run(f.host(0), settings(t)), "tools"), doctor.OK, "mkfs.ext4, debootstrap, apt-get are on PATH", "")
	expect(t, find(t, run(f.host(1000), settings(t)), "tools"), doctor.Warn, "mmdebstrap, newuidmap, newgidmap not found", "sudo apt install mmdebstrap uidmap")
	for _, p := range []string{"mmdebstrap", "newuidmap", "newgidmap"} {
		f.program(p, "exit 0")
	}
	expect(t, find(t, run(f.host(1000), settings(t)), "tools"), doctor.OK, "mkfs.ext4, mmdebstrap, newuidmap, newgidmap, apt-get are on PATH", "")
}
