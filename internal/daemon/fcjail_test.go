package daemon

import (
	"banger/internal/hostprobe"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"banger/internal/daemon/fcproc"
	"banger/internal/daemon/vmm"
	"banger/internal/store"
)

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
	// Firecracker must open /dev/kvm to reach InstanceStart; a kvm_pvm
	// host's does, though no guest boots there (this one's kernel is not
	// one anyway).
	kvm := hostprobe.ProbeKVM(hostprobe.System())
	if kvm.State != hostprobe.KVMUsable && kvm.State != hostprobe.KVMPVM {
		t.Skipf("Firecracker needs to open /dev/kvm: %s", kvm.Reason)
	}
	vm, v := testVMManager(t)
	bin := t.TempDir()
	copyFile(t, fc, filepath.Join(bin, "firecracker"), 0o755)
	copyFile(t, jailer, filepath.Join(bin, "jailer"), 0o755)
	vm.cfg.FirecrackerBin = filepath.Join(bin, "firecracker")
	vm.registerDrivers()
	facts := vm.host()
	facts.KVM = hostprobe.KVM{State: hostprobe.KVMUsable, Reason: kvm.Reason}
	vm.host = func() vmm.Host { return facts }
	ctx := context.Background()
	_, err := vm.Start(ctx, v.Name, vmm.Firecracker, noProgress{})
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
