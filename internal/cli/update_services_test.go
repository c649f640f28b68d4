package cli

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"banger/internal/progress"
	"banger/internal/testutil"
)

// A bangerd that banger update started and that does not answer is killed,
// so that the old bangerd can take its place; `banger daemon start` (no
// killHungDaemon) leaves it be.
func TestStartDaemonKillsAHungBangerdForUpdate(t *testing.T) {
	home := t.TempDir()
	pidFile := filepath.Join(t.TempDir(), "pid")
	hung := filepath.Join(t.TempDir(), "bangerd")
	script := "#!/bin/sh\necho $$ > " + pidFile + "\nexec sleep 60\n"
	if err := os.WriteFile(hung, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"HOME": home, "XDG_RUNTIME_DIR": testutil.ShortDir(t, "bgk")}
	var stderr bytes.Buffer
	a := &app{stderr: &stderr, getenv: func(k string) string { return env[k] }, daemonBin: hung, killHungDaemon: true, quiet: true}
	ctx, cancel := context.WithTimeout(context.Background(), 700*time.Millisecond)
	defer cancel()
	if _, _, err := a.startDaemon(ctx); err == nil {
		t.Fatal("a bangerd that never answers started")
	}
	data, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatalf("the fake bangerd did not run: %v", err)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(data)))
	if pid <= 0 {
		t.Fatalf("pid file %q", data)
	}
	if err := syscall.Kill(pid, 0); err == nil {
		syscall.Kill(pid, syscall.SIGKILL)
		t.Fatalf("the hung bangerd (pid %d) still runs", pid)
	}
}

func TestDownloadReporterLines(t *testing.T) {
	var buf bytes.Buffer
	a := &app{stderr: &buf, getenv: func(string) string { return "" }}
	r := newDownloadReporter(a, "banger_v0.0.2_linux_amd64.tar.gz")
	r.SetTotal(3<<20, progress.Bytes)
	r.Add(1 << 20)
	r.Add(2 << 20)
	r.finish(nil)
	out := buf.String()
	for _, want := range []string{"update: download banger_v0.0.2_linux_amd64.tar.gz\n", "update: downloading (3.0 MiB/3.0 MiB, ", "update: succeeded\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("output %q lacks %q", out, want)
		}
	}
}
