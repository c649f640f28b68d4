package boot_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"banger/internal/guest/boot"
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
	for _, c := range []struct {
		content string
		want    int
	}{
		{"77\n", 77}, {"77", 77}, {"78\n", 0}, {"1\n", 0}, {"-3\n", 0}, {"seventy\n", 0}, {"", 0},
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
