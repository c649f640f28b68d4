package cli

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"banger/internal/guest/agent"
	"banger/internal/guest/client"
	"banger/internal/testutil/agenttest"
)

// workspaceAgent runs a real guest agent on a Unix socket and returns a
// client for it.
func workspaceAgent(t *testing.T) *client.Client {
	t.Helper()
	sock := agenttest.Serve(t, agent.Options{Protocol: 1, Version: "test", Logf: t.Logf})
	return client.New(client.NetOpener("unix", sock), client.Config{Version: "test"})
}

// TestCopyWorkspaceFollowsNothingInside: the workspace may be named
// through a symlink, but symlinks inside it stay symlinks (the guest does
// not get the contents of what they point at).
func TestCopyWorkspaceFollowsNothingInside(t *testing.T) {
	c := workspaceAgent(t)
	base := t.TempDir()
	tree := filepath.Join(base, "tree")
	if err := os.MkdirAll(filepath.Join(tree, "src"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(tree, "src", "main.go"), []byte("package main\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(base, "secret"), []byte("host secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(base, "secret"), filepath.Join(tree, "leak")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(base, filepath.Join(tree, "up")); err != nil {
		t.Fatal(err)
	}
	named := filepath.Join(base, "named")
	if err := os.Symlink(tree, named); err != nil {
		t.Fatal(err)
	}
	guest := t.TempDir()
	if err := copyTreeAs(context.Background(), c, named, guest, "workspace"); err != nil {
		t.Fatal(err)
	}
	ws := filepath.Join(guest, "workspace")
	if fi, err := os.Lstat(ws); err != nil || !fi.IsDir() {
		t.Fatalf("workspace: %v, %v; want a directory", fi, err)
	}
	if b, err := os.ReadFile(filepath.Join(ws, "src", "main.go")); err != nil || string(b) != "package main\n" {
		t.Errorf("main.go: %q, %v", b, err)
	}
	for _, l := range []string{"leak", "up"} {
		if fi, err := os.Lstat(filepath.Join(ws, l)); err != nil || fi.Mode()&os.ModeSymlink == 0 {
			t.Errorf("%s: %v, %v; want a symlink", l, fi, err)
		}
	}
}

// TestCopyWorkspaceWithFIFO: a FIFO in the workspace stops the copy with
// an error naming it, at once; nothing waits for a writer.
func TestCopyWorkspaceWithFIFO(t *testing.T) {
	c := workspaceAgent(t)
	tree := t.TempDir()
	if err := os.WriteFile(filepath.Join(tree, "a"), []byte("a"), 0o644); err != nil {
		t.Fatal(err)
	}
	fifo := filepath.Join(tree, "pipe")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Skipf("cannot make a FIFO here: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err := copyTreeAs(ctx, c, tree, t.TempDir(), "workspace")
	if ctx.Err() != nil {
		t.Fatal("the copy waited on the FIFO")
	}
	if err == nil || !strings.Contains(err.Error(), fifo) || !strings.Contains(err.Error(), "FIFO") {
		t.Fatalf("got %v, want an error naming the FIFO", err)
	}
}

// TestCopyWorkspaceRefusedEarly: when the agent refuses part way, the copy
// returns its answer and the packing goroutines end with it.
func TestCopyWorkspaceRefusedEarly(t *testing.T) {
	c := workspaceAgent(t)
	tree := t.TempDir()
	for i := range 20 {
		if err := os.WriteFile(filepath.Join(tree, "f"+string(rune('a'+i))), make([]byte, 1<<20), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	done := make(chan error, 1)
	go func() { done <- copyTreeAs(context.Background(), c, tree, "relative/dir", "workspace") }()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "not an absolute path") {
			t.Fatalf("got %v, want the agent's refusal", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("copyTreeAs did not return after the agent refused")
	}
}
