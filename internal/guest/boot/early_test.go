package boot_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"banger/internal/guest/boot"
	"banger/internal/guest/initrd"
)

func TestEarlyAgent(t *testing.T) {
	dir := t.TempDir()
	file, proc := filepath.Join(dir, "early-agent"), filepath.Join(dir, "proc")
	if err := os.MkdirAll(filepath.Join(proc, "77"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(proc, "77", "comm"), []byte("banger-vsock-ag\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(proc, "77", "stat"), []byte("77 (banger-vsock-ag) S 1 77 77 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 5 0 500 12345 67\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		content string
		want    int
	}{
		{"77\n", 77}, {"77", 77}, {"77 500\n", 77}, {"77 501\n", 0}, {"77 500 9\n", 0}, {"78\n", 0}, {"1\n", 0}, {"-3\n", 0}, {"seventy\n", 0}, {"", 0},
	} {
		if err := os.WriteFile(file, []byte(c.content), 0o644); err != nil {
			t.Fatal(err)
		}
		if got := boot.EarlyAgent(file, proc, "banger-vsock-agent"); got != c.want {
			t.Errorf("file %q: pid %d, want %d", c.content, got, c.want)
		}
	}
	if got := boot.EarlyAgent(filepath.Join(dir, "missing"), proc, "banger-vsock-agent"); got != 0 {
		t.Errorf("no file: pid %d", got)
	}
	if got := boot.EarlyAgent(file, proc, "sshd"); got != 0 {
		t.Errorf("another program's name: pid %d", got)
	}

	alive := 3
	if err := boot.WaitEarlyAgent(context.Background(), func() bool { alive--; return alive > 0 }, time.Millisecond); err != nil || alive != 0 {
		t.Errorf("wait: %v, %d checks left", err, alive)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := boot.WaitEarlyAgent(ctx, func() bool { return true }, time.Hour); err == nil {
		t.Error("a cancelled wait returned nil")
	}
}

// TestEarlyAgentPidReused: the pid file outlives the early agent (/run is
// kept until the next boot), so once that agent has exited its pid can be
// another process's, and the name check alone takes any process called
// banger-vsock-agent (a guest user's renamed program, or a later serving
// agent that got the same pid after the pids wrapped: it then waits for
// itself forever) for the early agent. The record carries the process's
// start time, which a reused pid does not have; a zombie is not running.
func TestEarlyAgentPidReused(t *testing.T) {
	dir := t.TempDir()
	file, proc := filepath.Join(dir, "early-agent"), filepath.Join(dir, "proc")
	stat := func(state string, start int) {
		t.Helper()
		if err := os.MkdirAll(filepath.Join(proc, "77"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(proc, "77", "comm"), []byte("banger-vsock-ag\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		// The name in parentheses may hold spaces and parentheses.
		s := fmt.Sprintf("77 (banger-vs) k) %s 1 77 77 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 5 0 %d 12345 67 ...\n", state, start)
		if err := os.WriteFile(filepath.Join(proc, "77", "stat"), []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	stat("S", 500)
	rec, err := initrd.EarlyAgentRecord(proc, 77)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, []byte(rec), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := boot.EarlyAgent(file, proc, "banger-vsock-agent"); got != 77 {
		t.Fatalf("the early agent itself (record %q): pid %d, want 77", rec, got)
	}
	stat("Z", 500)
	if got := boot.EarlyAgent(file, proc, "banger-vsock-agent"); got != 0 {
		t.Errorf("the early agent exited, not yet reaped: pid %d, want 0", got)
	}
	stat("S", 900)
	if got := boot.EarlyAgent(file, proc, "banger-vsock-agent"); got != 0 {
		t.Errorf("pid 77 reused by another banger-vsock-agent: pid %d, want 0", got)
	}
}

// TestWaitEarlyAgentExit: the wait ends when the process exits (a pidfd,
// no polling), at once when alive says the pid is no longer the early
// agent, and when ctx ends.
func TestWaitEarlyAgentExit(t *testing.T) {
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Skipf("cannot start sleep: %v", err)
	}
	defer cmd.Process.Kill()
	never := func() bool { t.Error("alive polled though a pidfd was open"); return true }
	once := 0
	alive := func() bool { once++; return once == 1 || never() }
	done := make(chan error, 1)
	go func() {
		done <- boot.WaitEarlyAgentExit(context.Background(), cmd.Process.Pid, alive, time.Millisecond)
	}()
	select {
	case err := <-done:
		t.Fatalf("returned while the process runs: %v", err)
	case <-time.After(100 * time.Millisecond):
	}
	cmd.Process.Kill()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no return after the process exited")
	}
	cmd.Wait()

	other := exec.Command("sleep", "60")
	if err := other.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { other.Process.Kill(); other.Wait() }()
	if err := boot.WaitEarlyAgentExit(context.Background(), other.Process.Pid, func() bool { return false }, time.Millisecond); err != nil {
		t.Fatalf("a pid that is not the early agent: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := boot.WaitEarlyAgentExit(ctx, other.Process.Pid, func() bool { return true }, time.Millisecond); err == nil {
		t.Fatal("a cancelled wait returned nil")
	}
}
