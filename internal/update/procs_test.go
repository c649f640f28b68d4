package update

import (
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// ProcsOf finds a process of an install's bangerd by its executable, with
// the uid it runs as (another user's, here).
func TestProcsOfFindsAnotherUsersProcess(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run a process as another user")
	}
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Skip("no sleep binary")
	}
	dir, err := os.MkdirTemp("", "banger-procs-") // t.TempDir's parent is 0700
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	exe := filepath.Join(dir, "bangerd")
	data, err := os.ReadFile(sleep)
	if err != nil {
		t.Fatal(err)
	}
	writeBin(t, exe, string(data))
	cmd := exec.Command(exe, "30")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 54321, Gid: 54321}}
	if err := cmd.Start(); err != nil {
		t.Skipf("cannot start a process as uid 54321: %v", err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	deadline := time.Now().Add(5 * time.Second)
	for {
		procs := ProcsOf("/proc", exe)
		if len(procs) == 1 && procs[0] == (Proc{PID: cmd.Process.Pid, UID: 54321}) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("ProcsOf = %+v, want pid %d uid 54321", procs, cmd.Process.Pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if got := ProcsOf("/proc", filepath.Join(dir, "other")); len(got) != 0 {
		t.Errorf("ProcsOf(another exe) = %+v", got)
	}
}
