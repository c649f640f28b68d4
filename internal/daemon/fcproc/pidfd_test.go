package fcproc

import (
	"context"
	"testing"
	"time"

	"banger/internal/procwatch"
)

// heldOf counts the pidfds this test process holds of pid (all for 0).
func heldOf(t *testing.T, pid int) int {
	t.Helper()
	n, err := procwatch.PidfdsHeld(pid)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// Spawned and adopted Firecrackers are both held by a pidfd, and give it
// back once they have exited or been released.
func TestProcessHeldByPidfd(t *testing.T) {
	cfg := testConfig(t, fakeBinary(t, nil))
	cfg.Net = nil
	base := heldOf(t, 0)
	p, err := Start(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Stop(context.Background(), nil) })
	spawned := heldOf(t, p.PID)
	if spawned < 1 {
		t.Fatalf("spawned pid %d is held by no pidfd", p.PID)
	}
	a, err := Adopt(p.PID, p.StartTime, cfg.Dir)
	if err != nil {
		t.Fatal(err)
	}
	if n := heldOf(t, p.PID); n != spawned+1 {
		t.Errorf("adopted: %d pidfds of pid %d, want %d", n, p.PID, spawned+1)
	}
	a.Release()
	if n := heldOf(t, p.PID); n != spawned {
		t.Errorf("released: %d pidfds of pid %d, want %d", n, p.PID, spawned)
	}
	p.Timeouts.CtrlAltDel = 50 * time.Millisecond
	if err := p.Stop(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for heldOf(t, 0) != base && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if n := heldOf(t, 0); n != base {
		t.Errorf("%d pidfds held after Stop, %d before Start", n, base)
	}
}
