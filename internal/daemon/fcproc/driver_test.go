package fcproc

import (
	"banger/internal/hostprobe"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"banger/internal/daemon/vmm"
)

func TestDecideJail(t *testing.T) {
	if os.Geteuid() != 0 {
		if j, why, _ := decideJail(Config{Name: "vm"}, "", "/var/lib/banger/jail", 7, 7); j != nil || !strings.Contains(why, "not root") {
			t.Errorf("non-root: %+v, %q", j, why)
		}
		t.Skip("the rest needs root")
	}
	dir := t.TempDir()
	fc := filepath.Join(dir, "firecracker")
	os.WriteFile(fc, []byte("#!/bin/sh\n"), 0o755)
	t.Setenv("PATH", dir) // no jailer on PATH either
	cfg := Config{Name: "vm-1", Binary: fc}
	if j, why, _ := decideJail(cfg, "", "/var/lib/banger/jail", 7, 7); j != nil || !strings.Contains(why, "no jailer installed") {
		t.Errorf("without a jailer: %+v, %q", j, why)
	}
	jailer := filepath.Join(dir, "jailer")
	os.WriteFile(jailer, []byte("#!/bin/sh\n"), 0o755)
	j, why, _ := decideJail(cfg, "", "/var/lib/banger/jail", 7, 8)
	if j == nil || j.Binary != jailer || j.UID != 7 || j.GID != 8 || j.BaseDir != "/var/lib/banger/jail" || !strings.Contains(why, "jailed by "+jailer+" as uid 7") {
		t.Errorf("with a jailer beside firecracker: %+v, %q", j, why)
	}
	// jailer_bin wins over the one beside firecracker, and must exist.
	other := filepath.Join(t.TempDir(), "my-jailer")
	os.WriteFile(other, []byte("#!/bin/sh\n"), 0o755)
	if j, why, err := decideJail(cfg, other, "/var/lib/banger/jail", 7, 7); err != nil || j == nil || j.Binary != other || !strings.Contains(why, other) {
		t.Errorf("jailer_bin: %+v, %q, %v", j, why, err)
	}
	if j, _, err := decideJail(cfg, other+".missing", "/var/lib/banger/jail", 7, 7); err == nil || j != nil || !strings.Contains(err.Error(), "jailer_bin") {
		t.Errorf("a missing jailer_bin: %+v, %v; want an error naming jailer_bin", j, err)
	}
	cfg.Name = strings.Repeat("n", 64)
	if j, why, _ := decideJail(cfg, "", "/var/lib/banger/jail", 7, 7); j != nil || !strings.Contains(why, "longer than") {
		t.Errorf("a name too long for the chroot's sockets: %+v, %q", j, why)
	}
}

func TestDriverBasics(t *testing.T) {
	d := NewDriver(DriverConfig{})
	kvm := hostprobe.KVM{State: hostprobe.KVMUsable, Reason: "/dev/kvm opens read-write"}
	if _, err := d.Usable(vmm.Host{Firecracker: hostprobe.Binary{Err: errors.New("no fc")}, KVM: kvm}); err == nil {
		t.Error("usable without firecracker")
	}
	for _, st := range []hostprobe.KVMState{hostprobe.KVMAbsent, hostprobe.KVMPVM, hostprobe.KVMNoAccess} {
		if _, err := d.Usable(vmm.Host{Firecracker: hostprobe.Binary{Path: "/fc"}, KVM: hostprobe.KVM{State: st, Reason: "no"}}); err == nil {
			t.Errorf("usable with KVM %s", st)
		}
	}
	if what, err := d.Usable(vmm.Host{Firecracker: hostprobe.Binary{Path: "/fc"}, KVM: kvm}); err != nil || what != "/fc with /dev/kvm" {
		t.Errorf("usable: %q, %v", what, err)
	}
	ds := fcDrives([]string{"/root", "/work"})
	if len(ds) != 2 || !ds[0].Root || ds[0].ID != "root" || ds[1].ID != "disk1" || ds[1].Root {
		t.Errorf("drives %+v", ds)
	}
	if _, err := FindBinary(filepath.Join(t.TempDir(), "none")); err == nil || !strings.Contains(err.Error(), "firecracker_bin") {
		t.Errorf("FindBinary of a missing file: %v", err)
	}
	if d.Sweep() != nil || d.UserNetwork() || d.Name() != vmm.Firecracker {
		t.Error("basics")
	}
}
