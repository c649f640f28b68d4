package daemon

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// TestKVMGroupOnlyKVM: a VMM's user gets /dev/kvm's group only when that
// group is "kvm"; a /dev/kvm left in another group (disk, a user's) must
// not hand that group's files to every VM's QEMU.
func TestKVMGroupOnlyKVM(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to give the stand-in device a group")
	}
	dir := t.TempDir()
	dev := filepath.Join(dir, "kvm")
	if err := os.WriteFile(dev, nil, 0o660); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dev, 0o660); err != nil {
		t.Fatal(err)
	}
	const gid = 4242
	if err := os.Chown(dev, 0, gid); err != nil {
		t.Fatal(err)
	}
	groups := filepath.Join(dir, "group")
	for _, tc := range []struct {
		name, db string
		mode     os.FileMode
		want     []uint32
	}{
		{"kvm", "root:x:0:\nkvm:x:4242:\n", 0o660, []uint32{gid}},
		{"disk", "root:x:0:\ndisk:x:4242:\n", 0o660, nil},
		{"no entry", "root:x:0:\nkvm:x:4243:\n", 0o660, nil},
		{"group cannot write", "kvm:x:4242:\n", 0o640, nil},
	} {
		if err := os.WriteFile(groups, []byte(tc.db), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(dev, tc.mode); err != nil {
			t.Fatal(err)
		}
		if got := kvmGroupOf(dev, groups); !slices.Equal(got, tc.want) {
			t.Errorf("%s: kvmGroupOf = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestVMMUIDsAvoidSubordinateIDs: a uid in a user's /etc/subuid (or
// /etc/subgid) range is never a VMM's: that user's user namespaces can run
// processes as it, which could ptrace the VMM and reach its VM's disks.
func TestVMMUIDsAvoidSubordinateIDs(t *testing.T) {
	dir := t.TempDir()
	subuid, subgid := filepath.Join(dir, "subuid"), filepath.Join(dir, "subgid")
	// alice's subuids cover the whole VMM range but its last uid; bob's
	// subgids the last one but its last two, and a range far away.
	a := fmt.Sprintf("alice:%d:%d\n# comment\nbroken:line\n", vmmUIDBase, vmmUIDCount-1)
	b := fmt.Sprintf("bob:100000:65536\n1001:%d:1\n", vmmUIDBase+vmmUIDCount-1)
	if err := os.WriteFile(subuid, []byte(a), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(subgid, []byte(b), 0o644); err != nil {
		t.Fatal(err)
	}
	oldSub := subIDDBs
	subIDDBs = []string{subuid, subgid}
	t.Cleanup(func() { subIDDBs = oldSub })

	used, err := uidsInUse(vmmUIDBase, vmmUIDCount)
	if err != nil {
		t.Fatal(err)
	}
	for _, uid := range []uint32{vmmUIDBase, vmmUIDBase + 1234, vmmUIDBase + vmmUIDCount - 2, vmmUIDBase + vmmUIDCount - 1} {
		if !used[uid] {
			t.Errorf("uid %d is in a subordinate id range but not counted as used", uid)
		}
	}
	if os.Geteuid() != 0 {
		return
	}
	var u vmmUsers
	if cred, _, err := u.credential("some-vm"); err == nil {
		t.Errorf("credential picked uid %d, inside a user's subordinate ids", cred.Uid)
	}
}

// TestVMMUIDsDistinctAcrossDaemons: two root bangerds (two state dirs)
// starting VMMs at once never pick the same uid, even for VMs whose ids
// lead to the same one: the second skips a uid the first holds while its
// VMM is not yet running.
func TestVMMUIDsDistinctAcrossDaemons(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("only a root bangerd picks VMM uids")
	}
	var a, b vmmUsers // two daemons: each its own map and lock file
	t.Cleanup(func() {
		for _, u := range []*vmmUsers{&a, &b} {
			if u.lock != nil {
				u.lock.Close()
			}
		}
	})
	ca, releaseA, err := a.credential("same-id")
	if err != nil {
		t.Fatal(err)
	}
	cb, releaseB, err := b.credential("same-id")
	if err != nil {
		t.Fatal(err)
	}
	if ca.Uid == cb.Uid {
		t.Errorf("two daemons starting VMMs at once both got uid %d", ca.Uid)
	}
	releaseB()
	releaseA()
	// Released, the uid is free again for the other daemon.
	cb2, releaseB2, err := b.credential("same-id")
	if err != nil {
		t.Fatal(err)
	}
	defer releaseB2()
	if cb2.Uid != ca.Uid {
		t.Errorf("after the release, the other daemon got uid %d, want %d (the id's own)", cb2.Uid, ca.Uid)
	}
}
