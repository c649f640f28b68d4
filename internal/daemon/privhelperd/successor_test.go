package privhelperd

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestRunLeavesASuccessorsSocket: a helper that is stopping (its listener
// closed, requests still finishing) may see a new helper bind the same
// path. When the old one exits it must not remove the new one's socket,
// which would leave every bangerd without a helper until a restart.
func TestRunLeavesASuccessorsSocket(t *testing.T) {
	needNetRoot(t)
	_, nsPath := testNS(t)
	dir := shortDir(t)
	sock := filepath.Join(dir, "helper.sock")
	allow := filepath.Join(dir, "helper-users")
	if err := os.WriteFile(allow, []byte("root\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	logs := &syncBuffer{}
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"--socket", sock, "--allow", allow}, runEnv{stderr: logs, netns: nsPath, sysctlDir: t.TempDir()})
	}()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if c, err := net.Dial("unix", sock); err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the helper never listened\n%s", logs)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The successor takes the path (its Listen renames its socket over it).
	if err := os.Rename(sock, sock+".old"); err != nil {
		t.Fatal(err)
	}
	next, err := Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	defer next.Close()
	cancel()
	if code := <-done; code != 0 {
		t.Fatalf("helper exited %d\n%s", code, logs)
	}
	if _, err := os.Lstat(sock); err != nil {
		t.Fatalf("the stopping helper removed its successor's socket: %v", err)
	}
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatalf("the successor no longer answers: %v", err)
	}
	c.Close()
}
