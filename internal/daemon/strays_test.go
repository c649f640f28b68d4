package daemon

import (
	"banger/internal/procwatch"
	"context"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"banger/internal/daemon/fcproc"
	"banger/internal/daemon/qemuproc"
	"banger/internal/daemon/vmm"
)

// TestKillStraysSparesBystanders: the stray sweep kills the VMMs of a run
// dir and nothing else, not a command that merely names a file in it (an
// admin's `tail -f .../console.log`), which a root bangerd would otherwise
// SIGKILL whoever ran it.
func TestKillStraysSparesBystanders(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "vms", "0123456789abcdef")
	spawn := func(args ...string) *exec.Cmd {
		// `sh -c 'read x' sh ARGS...` blocks on its stdin with ARGS in
		// its command line.
		cmd := exec.Command("sh", append([]string{"-c", "read x", "sh"}, args...)...)
		if _, err := cmd.StdinPipe(); err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		return cmd
	}
	bystander := spawn("tail", "-f", qemuproc.ConsoleLogPath(dir), dir+"/")
	qemu := spawn("-name", qemuproc.NameMarker(dir), "-sandbox", qemuproc.Sandbox)
	fc := spawn("--api-sock", fcproc.APISocketPath(dir), "--id", "x")
	other := spawn("-name", qemuproc.NameMarker(dir+"0"))
	time.Sleep(50 * time.Millisecond) // let sh exec
	if n := killStrays(dir, testDrivers()); n != 2 {
		t.Errorf("killStrays killed %d processes, want 2 (the QEMU and the Firecracker)", n)
	}
	for _, c := range []*exec.Cmd{qemu, fc} {
		if procwatch.Running(c.Process.Pid) {
			t.Errorf("VMM %v still runs", c.Args)
		}
	}
	for _, c := range []*exec.Cmd{bystander, other} {
		if !procwatch.Running(c.Process.Pid) {
			t.Errorf("%v was killed, though it is no VMM of %s", c.Args, dir)
		}
	}
}

// TestStartKillsAStuckVMMFirst: a VMM of the VM that outlived its stop
// (stuck in its teardown) still holds the disk; a start must not run a
// second VMM beside it.
func TestStartKillsAStuckVMMFirst(t *testing.T) {
	vm, v := testVMManager(t)
	stuck := exec.Command("sh", "-c", "read x", "sh", "-name", qemuproc.NameMarker(vm.runDir(v.ID)), "-sandbox", qemuproc.Sandbox)
	if _, err := stuck.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	if err := stuck.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = stuck.Wait(); close(exited) }()
	t.Cleanup(func() { _ = stuck.Process.Kill(); <-exited })
	time.Sleep(50 * time.Millisecond) // let sh exec
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, _ = vm.Start(ctx, v.Name, "", noProgress{}) // the fake guest crashes; that is not the point
	select {
	case <-exited:
	case <-time.After(5 * time.Second):
		t.Fatal("a VMM of the VM left running survived the start of a new one")
	}
}

// testDrivers are the drivers bangerd registers, with default settings.
func testDrivers() vmm.Registry {
	return vmm.NewRegistry(fcproc.NewDriver(fcproc.DriverConfig{}), qemuproc.NewDriver(""))
}
