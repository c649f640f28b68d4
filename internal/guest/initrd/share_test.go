package initrd

import (
	"bytes"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"banger/internal/testutil"

	"golang.org/x/sys/unix"
)

// TestGoBuildIDMatchesGoTool reads the build ID of a real Go binary (this
// test's own) and compares it with what `go tool buildid` says.
func TestGoBuildIDMatchesGoTool(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("go", "tool", "buildid", exe).Output()
	if err != nil {
		t.Skipf("go tool buildid: %v", err)
	}
	want := strings.TrimSpace(string(out))
	if got := goBuildID(exe); got != want || got == "" {
		t.Fatalf("goBuildID = %q, go tool buildid = %q", got, want)
	}
}

func TestGoBuildIDRefusesWhatIsNotAGoBinary(t *testing.T) {
	dir := t.TempDir()
	exe, _ := os.Executable()
	link := filepath.Join(dir, "link")
	if err := os.Symlink(exe, link); err != nil {
		t.Fatal(err)
	}
	script := filepath.Join(dir, "script")
	os.WriteFile(script, []byte("#!/bin/sh\necho hi\n"), 0o755)
	empty := filepath.Join(dir, "empty")
	os.WriteFile(empty, nil, 0o755)
	for _, p := range []string{link, script, empty, dir, filepath.Join(dir, "missing")} {
		if id := goBuildID(p); id != "" {
			t.Errorf("goBuildID(%s) = %q, want none", p, id)
		}
	}
	// A real ELF file without Go's note: the system's shell, when it is one.
	if data, err := os.ReadFile("/bin/sh"); err == nil && len(data) > 4 && string(data[:4]) == "\x7fELF" {
		if id := parseGoBuildID(data[:min(len(data), buildIDReadSize)]); id != "" {
			t.Errorf("/bin/sh has a Go build ID %q?", id)
		}
	}
}

func TestParseGoBuildIDTruncated(t *testing.T) {
	exe, _ := os.Executable()
	data, err := os.ReadFile(exe)
	if err != nil {
		t.Fatal(err)
	}
	data = data[:buildIDReadSize]
	want := parseGoBuildID(data)
	if want == "" {
		t.Fatal("no build ID in the first bytes of the test binary")
	}
	// Every cut either still finds the whole ID or finds none: never a
	// part of it, never a panic.
	for n := 0; n < 8192; n++ {
		if got := parseGoBuildID(data[:n]); got != "" && got != want {
			t.Fatalf("cut at %d: %q", n, got)
		}
	}
}

func FuzzParseGoBuildID(f *testing.F) {
	if exe, err := os.Executable(); err == nil {
		if data, err := os.ReadFile(exe); err == nil && len(data) > 8192 {
			f.Add(data[:8192])
		}
	}
	f.Add([]byte("\x7fELF\x02\x01"))
	f.Fuzz(func(t *testing.T, b []byte) {
		id := parseGoBuildID(b)
		if len(id) > len(b) {
			t.Fatalf("ID longer than the input: %d > %d", len(id), len(b))
		}
	})
}

// TestShareAgentLendsOnlyTheSameBuild runs shareAgent against a stand-in
// root: a copy of this very binary gets the bind mount (read-only, and
// running it runs this file's pages); a different program does not.
func TestShareAgentLendsOnlyTheSameBuild(t *testing.T) {
	testutil.NeedRoot(t, "bind-mount")
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	b := &booter{console: io.Discard}
	root := t.TempDir()
	agent := filepath.Join(root, RootAgent)
	if err := os.MkdirAll(filepath.Dir(agent), 0o755); err != nil {
		t.Fatal(err)
	}

	// Another build: a copy with one byte of its build ID changed.
	other := append([]byte(nil), data...)
	id := parseGoBuildID(other[:buildIDReadSize])
	i := bytes.Index(other[:buildIDReadSize], []byte(id))
	other[i] ^= 1
	if err := os.WriteFile(agent, other, 0o755); err != nil {
		t.Fatal(err)
	}
	if b.shareAgent(self, root) || mountedAt(t, agent) {
		t.Fatal("lent to a different build")
	}

	if err := os.WriteFile(agent, data, 0o755); err != nil {
		t.Fatal(err)
	}
	if !b.shareAgent(self, root) {
		t.Fatal("not lent to the same build")
	}
	t.Cleanup(func() { _ = unix.Unmount(agent, unix.MNT_DETACH) })
	if !mountedAt(t, agent) {
		t.Fatal("shareAgent said yes but nothing is mounted")
	}
	var a, s unix.Stat_t
	if unix.Stat(agent, &a) != nil || unix.Stat(self, &s) != nil || a.Ino != s.Ino || a.Dev != s.Dev {
		t.Fatal("the mounted file is not this binary")
	}
	if err := os.WriteFile(agent, []byte("x"), 0o755); err == nil {
		t.Fatal("the lent binary is writable")
	}

	// A symlink in the agent's place is left alone.
	if err := unix.Unmount(agent, unix.MNT_DETACH); err != nil {
		t.Fatal(err)
	}
	os.Remove(agent)
	if err := os.Symlink(self, agent); err != nil {
		t.Fatal(err)
	}
	if b.shareAgent(self, root) {
		t.Fatal("lent through a symlink")
	}
}

func mountedAt(t *testing.T, p string) bool {
	t.Helper()
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(data), "\n") {
		if f := strings.Fields(l); len(f) > 4 && f[4] == p {
			return true
		}
	}
	return false
}
