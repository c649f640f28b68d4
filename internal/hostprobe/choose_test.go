package hostprobe

import (
	"errors"
	"strings"
	"testing"
)

// facts builds Facts for the choice rules: fc and kvm say whether
// Firecracker is found and in which state /dev/kvm is.
func facts(fc bool, kvm KVMState) Facts {
	f := Facts{KVM: KVM{State: kvm, Reason: "/dev/kvm is " + string(kvm)}}
	if fc {
		f.Firecracker = Binary{Path: "/opt/fc"}
	} else {
		f.Firecracker = Binary{Err: errors.New("firecracker is not on PATH")}
	}
	return f
}

func TestChooseVMM(t *testing.T) {
	cases := []struct {
		want      string
		fc        bool
		kvm       KVMState
		kind      string
		reason    string // contained in the reason, or in the error when kind is ""
		reasonNot string
	}{
		{"auto", true, KVMUsable, VMMFirecracker, "auto: /opt/fc is installed and /dev/kvm is usable", ""},
		{"", true, KVMUsable, VMMFirecracker, "auto: /opt/fc is installed", ""},
		{"auto", false, KVMUsable, VMMQEMU, "auto: firecracker is not on PATH", "TCG"},
		{"auto", false, KVMAbsent, VMMQEMU, "auto: firecracker is not on PATH; /dev/kvm is absent (QEMU runs without it, under TCG: slower)", ""},
		{"auto", true, KVMAbsent, VMMQEMU, "auto: /dev/kvm is absent (QEMU runs without it, under TCG", ""},
		{"auto", true, KVMNoAccess, VMMQEMU, "/dev/kvm is no-access", ""},
		{"auto", true, KVMPVM, VMMQEMU, "auto: /dev/kvm is pvm (QEMU runs without it, under TCG: slower)", ""},
		{"auto", true, KVMBroken, VMMQEMU, "/dev/kvm is broken", ""},
		{"firecracker", true, KVMUsable, VMMFirecracker, "asked for; /opt/fc with /dev/kvm", ""},
		{"firecracker", false, KVMUsable, "", "vmm is firecracker but firecracker is not on PATH", ""},
		{"firecracker", true, KVMPVM, "", `vmm is firecracker but /dev/kvm is pvm; use vmm = "qemu" or --vmm qemu`, ""},
		{"firecracker", true, KVMAbsent, "", "vmm is firecracker but /dev/kvm is absent", ""},
		{"qemu", false, KVMUsable, VMMQEMU, "asked for", "TCG"},
		{"qemu", true, KVMPVM, VMMQEMU, "asked for; /dev/kvm is pvm (QEMU runs without it, under TCG", ""},
		{"kvm", true, KVMUsable, "", `unknown vmm "kvm": use auto, firecracker or qemu`, ""},
	}
	for _, c := range cases {
		kind, reason, err := ChooseVMM(c.want, facts(c.fc, c.kvm))
		got := reason
		if err != nil {
			got = err.Error()
		}
		if kind != c.kind || (err != nil) != (c.kind == "") || !strings.Contains(got, c.reason) ||
			(c.reasonNot != "" && strings.Contains(got, c.reasonNot)) {
			t.Errorf("ChooseVMM(%q, fc=%v, kvm=%s) = %q, %q, %v; want %q with %q", c.want, c.fc, c.kvm, kind, reason, err, c.kind, c.reason)
		}
	}
}

func TestChooseAccel(t *testing.T) {
	for _, c := range []struct {
		kvm    KVMState
		accel  string
		reason string
	}{
		{KVMUsable, AccelKVM, "/dev/kvm is usable"},
		{KVMAbsent, AccelTCG, "TCG software emulation (slow): /dev/kvm is absent"},
		{KVMNoAccess, AccelTCG, "TCG"},
		{KVMPVM, AccelTCG, "TCG software emulation (slow): /dev/kvm is pvm"},
		{KVMBroken, AccelTCG, "TCG"},
	} {
		a, r := ChooseAccel(facts(true, c.kvm))
		if a != c.accel || !strings.Contains(r, c.reason) {
			t.Errorf("ChooseAccel(%s) = %q, %q; want %q with %q", c.kvm, a, r, c.accel, c.reason)
		}
	}
}

func TestChooseCOW(t *testing.T) {
	noDM := errors.New("device-mapper snapshots are not available on this host: no loop devices")
	yes := Reflink{At: "/s", FS: "btrfs", Supported: true}
	no := Reflink{At: "/s", FS: "ext4"}
	unknown := Reflink{At: "/s", Err: errors.New("make a test file in /s: read-only file system")}
	cases := []struct {
		want   string
		snaps  error
		rl     Reflink
		kind   string
		reason string // or error, when kind is ""
	}{
		{"auto", nil, no, COWDMSnap, "auto picks dmsnap"},
		{"", nil, yes, COWDMSnap, "auto picks dmsnap"},
		{"auto", noDM, yes, COWReflink, "auto picks reflink: /s (btrfs) supports clones"},
		{"auto", noDM, no, COWCopy, "auto picks copy: no usable device-mapper, and /s (ext4) does not support reflink clones"},
		{"auto", noDM, unknown, Auto, "auto tries reflink and falls back to copy (reflink could not be tested: make a test file"},
		{"dmsnap", nil, no, COWDMSnap, "cow = dmsnap"},
		{"dmsnap", noDM, yes, "", "cow = dmsnap: device-mapper snapshots are not available on this host: no loop devices; or use cow = auto, reflink or copy"},
		{"reflink", nil, yes, COWReflink, "cow = reflink: /s (btrfs) supports it"},
		{"reflink", nil, unknown, COWReflink, "cannot be told: make a test file"},
		{"reflink", nil, no, "", "cow = reflink, but /s (ext4) does not support reflink clones"},
		{"copy", nil, yes, COWCopy, "cow = copy"},
		{"zfs", nil, yes, "", `unknown cow "zfs"`},
	}
	for _, c := range cases {
		kind, reason, err := ChooseCOW(c.want, Facts{Snapshots: SnapshotsFrom(c.snaps), Reflink: c.rl})
		got := reason
		if err != nil {
			got = err.Error()
		}
		if kind != c.kind || (err != nil) != (c.kind == "") || !strings.Contains(got, c.reason) {
			t.Errorf("ChooseCOW(%q, snapshots %v, %+v) = %q, %q, %v; want %q with %q", c.want, c.snaps, c.rl, kind, reason, err, c.kind, c.reason)
		}
	}
}

// TestChooseCOWZeroFacts: Facts the daemon builds with only what it asked
// never pick dmsnap or refuse reflink by accident.
func TestChooseCOWZeroFacts(t *testing.T) {
	for _, c := range []struct{ want, kind, reason string }{
		{"auto", Auto, "auto tries reflink and falls back to copy (reflink could not be tested: no state dir was given to test)"},
		{"dmsnap", "", "cow = dmsnap: device-mapper snapshots are not available on this host: nobody was asked"},
		{"reflink", COWReflink, "cannot be told"},
		{"copy", COWCopy, "cow = copy"},
	} {
		kind, reason, err := ChooseCOW(c.want, Facts{})
		got := reason
		if err != nil {
			got = err.Error()
		}
		if kind != c.kind || !strings.Contains(got, c.reason) {
			t.Errorf("ChooseCOW(%q, Facts{}) = %q, %q, %v; want %q with %q", c.want, kind, reason, err, c.kind, c.reason)
		}
	}
}
