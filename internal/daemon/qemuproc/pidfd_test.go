package qemuproc

import (
	"testing"
	"time"

	"banger/internal/procwatch"
)

// held counts the pidfds this test process holds of pid (all for 0).
func held(t *testing.T, pid int) int {
	t.Helper()
	n, err := procwatch.PidfdsHeld(pid)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// Started and adopted QEMUs are both held by a pidfd, and give it back
// once released or exited.
func TestProcessHeldByPidfd(t *testing.T) {
	base := held(t, 0)
	cfg := fakeConfig(t, "obedient")
	cfg.Timeouts.Quit = time.Minute // generous: the fake obeys quit
	orig := startFake(t, cfg)
	started := held(t, orig.PID)
	if started < 1 {
		t.Fatalf("started QEMU pid %d is held by no pidfd", orig.PID)
	}
	a, err := Adopt(orig.PID, orig.StartTime, cfg.Dir)
	if err != nil {
		t.Fatal(err)
	}
	if n := held(t, orig.PID); n != started+1 {
		t.Errorf("adopted: %d pidfds of pid %d, want %d", n, orig.PID, started+1)
	}
	a.Release()
	if n := held(t, orig.PID); n != started {
		t.Errorf("released: %d pidfds of pid %d, want %d", n, orig.PID, started)
	}
	if a.Exited() || orig.Exited() {
		t.Fatal("Release stopped QEMU")
	}
	orig.Release() // a started QEMU's reaper keeps running
	if err := orig.Stop(testCtx(t), nil); err != nil {
		t.Fatal(err)
	}
	if orig.StoppedBy() != StopQuit {
		t.Errorf("stopped by %q, want quit", orig.StoppedBy())
	}
	deadline := time.Now().Add(5 * time.Second)
	for held(t, 0) != base && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if n := held(t, 0); n != base {
		t.Errorf("%d pidfds held after Stop, %d before Start", n, base)
	}
}
