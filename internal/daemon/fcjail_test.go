package daemon

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"banger/internal/daemon/fcproc"
	"banger/internal/store"
)

func TestFCJail(t *testing.T) {
	if os.Geteuid() != 0 {
		if j, why, _ := fcJail(fcproc.Config{Name: "vm"}, "", "/var/lib/banger", 7, 7); j != nil || !strings.Contains(why, "not root") {
			t.Errorf("non-root: %+v, %q", j, why)
		}
		t.Skip("the rest needs root")
	}
	dir := t.TempDir()
	fc := filepath.Join(dir, "firecracker")
	os.WriteFile(fc, []byte("#!/bin/sh\n"), 0o755)
	t.Setenv("PATH", dir) // no jailer on PATH either
	cfg := fcproc.Config{Name: "vm-1", Binary: fc}
	if j, why, _ := fcJail(cfg, "", "/var/lib/banger", 7, 7); j != nil || !strings.Contains(why, "no jailer installed") {
		t.Errorf("without a jailer: %+v, %q", j, why)
	}
	jailer := filepath.Join(dir, "jailer")
	os.WriteFile(jailer, []byte("#!/bin/sh\n"), 0o755)
	j, why, _ := fcJail(cfg, "", "/var/lib/banger", 7, 8)
	if j == nil || j.Binary != jailer || j.UID != 7 || j.GID != 8 || j.BaseDir != "/var/lib/banger/jail" || !strings.Contains(why, "jailed by "+jailer+" as uid 7") {
		t.Errorf("with a jailer beside firecracker: %+v, %q", j, why)
	}
	// jailer_bin wins over the one beside firecracker, and must exist.
	other := filepath.Join(t.TempDir(), "my-jailer")
	os.WriteFile(other, []byte("#!/bin/sh\n"), 0o755)
	if j, why, err := fcJail(cfg, other, "/var/lib/banger", 7, 7); err != nil || j == nil || j.Binary != other || !strings.Contains(why, other) {
		t.Errorf("jailer_bin: %+v, %q, %v", j, why, err)
	}
	if j, _, err := fcJail(cfg, other+".missing", "/var/lib/banger", 7, 7); err == nil || j != nil || !strings.Contains(err.Error(), "jailer_bin") {
		t.Errorf("a missing jailer_bin: %+v, %v; want an error naming jailer_bin", j, err)
	}
	cfg.Name = strings.Repeat("n", 64)
	if j, why, _ := fcJail(cfg, "", "/var/lib/banger", 7, 7); j != nil || !strings.Contains(why, "longer than") {
		t.Errorf("a name too long for the chroot's sockets: %+v, %q", j, why)
	}
}

// TestJailedFC starts a VM through the manager with the real Firecracker
// and jailer (BANGER_TEST_FIRECRACKER, BANGER_TEST_JAILER) beside each
// other, with a kernel Firecracker refuses at InstanceStart: the VMM reason
// says the jailer was used, and the failed start leaves no chroot, no run
// dir, and the disk root's again.
func TestJailedFC(t *testing.T) {
	fc, jailer := os.Getenv("BANGER_TEST_FIRECRACKER"), os.Getenv("BANGER_TEST_JAILER")
	if fc == "" || jailer == "" {
		t.Skip("BANGER_TEST_FIRECRACKER and BANGER_TEST_JAILER are not both set")
	}
	if os.Geteuid() != 0 {
		t.Skip("the jailer needs a root bangerd")
	}
	if err := kvmUsable(); err != nil {
		t.Skipf("vmm = firecracker needs /dev/kvm: %v", err)
	}
	vm, v := testVMManager(t)
	bin := t.TempDir()
	copyFile(t, fc, filepath.Join(bin, "firecracker"), 0o755)
	copyFile(t, jailer, filepath.Join(bin, "jailer"), 0o755)
	vm.cfg.FirecrackerBin = filepath.Join(bin, "firecracker")
	ctx := context.Background()
	_, err := vm.Start(ctx, v.Name, vmmFirecracker, noProgress{})
	if err == nil {
		t.Fatal("Start succeeded with a kernel that is not one")
	}
	got, gerr := vm.st.GetVM(ctx, v.Name)
	if gerr != nil || got.State != store.VMFailed || !strings.Contains(got.VMMReason, "jailed by "+filepath.Join(bin, "jailer")) {
		t.Fatalf("VM %q, reason %q (%v); want failed and jailed; start error: %v", got.State, got.VMMReason, gerr, err)
	}
	t.Logf("start error: %v; reason: %s", err, got.VMMReason)
	if !strings.Contains(err.Error(), fcproc.StepInstanceStart) {
		t.Errorf("the start failed before InstanceStart: %v", err)
	}
	if _, err := os.Stat(vm.runDir(v.ID)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("run dir left after a failed start (%v)", err)
	}
	if _, err := os.Stat(filepath.Join(vm.cfg.StateDir, jailBaseName, "firecracker", v.Name)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("chroot left after a failed start (%v)", err)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(v.COWDevice, &st); err != nil || st.Uid != 0 {
		t.Errorf("the root disk is uid %d after the jail (%v), want root's", st.Uid, err)
	}
}

// TestReconcileSweepsIdleJails: a chroot left in the state dir with no run
// dir leading to it (a host reboot) is removed when bangerd starts.
func TestReconcileSweepsIdleJails(t *testing.T) {
	vm, _ := testVMManager(t)
	idle := filepath.Join(vm.cfg.StateDir, jailBaseName, "firecracker", "gone-vm")
	if err := os.MkdirAll(filepath.Join(idle, "root", "run"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := vm.Reconcile(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(idle); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("idle chroot %s left after reconciliation (%v)", idle, err)
	}
}
