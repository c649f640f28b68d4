package agentcmd

import (
	"context"
	"errors"
	"testing"
	"time"
)

// TestWaitWritable: the boot command goes on at once when / is writable,
// waits while it is read-only until it is remounted, gives up after the
// bound or when cancelled, and treats a failing check as writable.
func TestWaitWritable(t *testing.T) {
	ctx := context.Background()
	calls := 0
	flips := func(after int) func() (bool, error) {
		calls = 0
		return func() (bool, error) { calls++; return calls <= after, nil }
	}
	if !waitWritable(ctx, flips(0), time.Millisecond, time.Second) || calls != 1 {
		t.Fatalf("writable /: waited (%d checks)", calls)
	}
	if !waitWritable(ctx, flips(3), time.Millisecond, 10*time.Second) || calls != 4 {
		t.Fatalf("/ remounted after 3 checks: got %d checks", calls)
	}
	start := time.Now()
	if waitWritable(ctx, flips(1<<30), time.Millisecond, 50*time.Millisecond) {
		t.Fatal("a / that stays read-only was reported writable")
	}
	if d := time.Since(start); d < 50*time.Millisecond || d > 5*time.Second {
		t.Fatalf("gave up after %v, want about the 50ms bound", d)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if waitWritable(cctx, flips(1<<30), time.Millisecond, time.Hour) {
		t.Fatal("a cancelled wait reported / writable")
	}
	if !waitWritable(ctx, func() (bool, error) { return false, errors.New("statfs: boom") }, time.Millisecond, time.Hour) {
		t.Fatal("a failing check stopped the duties")
	}
}

// TestRootReadOnly: the real check answers on the test host.
func TestRootReadOnly(t *testing.T) {
	if _, err := rootReadOnly(); err != nil {
		t.Fatalf("statfs /: %v", err)
	}
}
