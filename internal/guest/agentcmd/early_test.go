package agentcmd

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"banger/internal/guest/boot"
)

// TestEarlyDone: the boot unit's agent stands aside while the early agent
// the initramfs started runs, and says the duties are done once its ready
// file is there; an early agent that died before it was ready, or none at
// all, leaves the duties to the unit.
func TestEarlyDone(t *testing.T) {
	root := t.TempDir()
	t.Setenv(EnvTestRoot, root)
	env := bootEnv()
	early := filepath.Join(root, boot.EarlyAgentFile)
	comm := filepath.Join(root, "proc", "4242", "comm")
	write := func(p, s string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	ctx := context.Background()
	poll := 5 * time.Millisecond

	if earlyDone(ctx, env, poll) {
		t.Fatal("no early agent: the duties were taken as done")
	}
	write(early, "4242\n")
	write(comm, "banger-vsock-ag\n") // the kernel keeps 15 bytes
	write(filepath.Join(root, "proc", "4242", "stat"), "4242 (banger-vsock-ag) S 1 4242 4242 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 5 0 500 12345 67\n")
	go func() {
		time.Sleep(50 * time.Millisecond)
		write(env.ReadyFile, "ready\n")
	}()
	if !earlyDone(ctx, env, poll) {
		t.Fatal("the early agent became ready: the duties were not taken as done")
	}

	// It exits later: its ready file still says the duties are done.
	if err := os.Remove(comm); err != nil {
		t.Fatal(err)
	}
	if !earlyDone(ctx, env, poll) {
		t.Fatal("an early agent that was ready and exited: duties not taken as done")
	}

	// It died before it was ready: the unit does the duties.
	if err := os.Remove(env.ReadyFile); err != nil {
		t.Fatal(err)
	}
	if earlyDone(ctx, env, poll) {
		t.Fatal("an early agent that died before it was ready: duties taken as done")
	}

	// The pid is now another program's: not the early agent.
	write(comm, "sshd\n")
	if pid := earlyAgent(env); pid != 0 {
		t.Fatalf("pid 4242 runs sshd, yet it is taken for the early agent")
	}

	// Still running and never ready: a cancelled wait does not do them.
	write(comm, "banger-vsock-ag\n")
	cctx, cancel := context.WithTimeout(ctx, 30*time.Millisecond)
	defer cancel()
	if earlyDone(cctx, env, poll) {
		t.Fatal("a cancelled wait took the duties as done")
	}
}
