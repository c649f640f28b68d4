package daemon

import (
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
