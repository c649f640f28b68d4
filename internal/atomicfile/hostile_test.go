package atomicfile

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestFullFileSystem: on a small tmpfs a write that does not fit fails
// with ENOSPC, leaves the old file whole and no temporary file behind.
func TestFullFileSystem(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting a tmpfs needs root")
	}
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size=256k"); err != nil {
		t.Skipf("mount tmpfs: %v", err)
	}
	defer syscall.Unmount(dir, syscall.MNT_DETACH)
	target := filepath.Join(dir, "f")
	if err := WriteFile(target, []byte("old"), Mode(0o644)); err != nil {
		t.Fatal(err)
	}
	_, err := WriteFrom(target, bytes.NewReader(make([]byte, 1<<20)))
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("got %v, want ENOSPC", err)
	}
	if b, _ := os.ReadFile(target); string(b) != "old" {
		t.Fatalf("f = %q", b)
	}
	if got := leftovers(t, dir); len(got) != 0 {
		t.Fatalf("left %v", got)
	}
}

// TestReadOnlyDirectory: as a user, a directory without write permission
// fails Create plainly and changes nothing.
func TestReadOnlyDirectory(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("runs the child as nobody")
	}
	if os.Getenv("ATOMICFILE_CHILD") != "" {
		err := WriteFile(filepath.Join(os.Getenv("ATOMICFILE_CHILD"), "f"), []byte("new"))
		if err == nil || !errors.Is(err, os.ErrPermission) {
			t.Fatalf("got %v, want a permission error", err)
		}
		return
	}
	dir := t.TempDir()
	_ = os.Chmod(filepath.Dir(dir), 0o755)
	if err := os.WriteFile(filepath.Join(dir, "f"), []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	_ = os.Chmod(dir, 0o555)
	cmd := exec.Command("setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", os.Args[0], "-test.run=^TestReadOnlyDirectory$")
	cmd.Env = append(os.Environ(), "ATOMICFILE_CHILD="+dir)
	out, err := cmd.CombinedOutput()
	if err != nil {
		if strings.Contains(string(out), "permission denied") && strings.Contains(string(out), os.Args[0]) {
			t.Skipf("the test binary is not reachable as nobody: %s", out)
		}
		t.Fatalf("child: %v\n%s", err, out)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "f")); string(b) != "old" {
		t.Fatalf("f = %q", b)
	}
	if got := leftovers(t, dir); len(got) != 0 {
		t.Fatalf("left %v", got)
	}
}

// TestKilledWriter: a writer killed between Create and Commit leaves the
// target whole and its temporary file, named so that a sweep can tell it.
func TestKilledWriter(t *testing.T) {
	if os.Getenv("ATOMICFILE_KILL") != "" {
		af, err := Create(filepath.Join(os.Getenv("ATOMICFILE_KILL"), "f"))
		if err != nil {
			os.Exit(3)
		}
		_, _ = af.Write([]byte("half"))
		os.Stdout.WriteString("ready\n")
		time.Sleep(time.Minute)
		return
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "f"), []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestKilledWriter$")
	cmd.Env = append(os.Environ(), "ATOMICFILE_KILL="+dir)
	out, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 6)
	_, _ = out.Read(buf)
	_ = cmd.Process.Signal(syscall.SIGKILL)
	_ = cmd.Wait()
	if b, _ := os.ReadFile(filepath.Join(dir, "f")); string(b) != "old" {
		t.Fatalf("f = %q", b)
	}
	for _, n := range leftovers(t, dir) {
		if !strings.HasPrefix(n, ".f.tmp-") {
			t.Fatalf("left %q, not named as a temporary of f", n)
		}
	}
}
