package testutil

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// fakeTB records what a helper did to the test it was given.
type fakeTB struct {
	testing.TB
	skipped string
}

func (f *fakeTB) Helper() {}

// Skipf records the message; the real one stops the goroutine, which the
// callers below stand in for by returning.
func (f *fakeTB) Skipf(format string, args ...any) {
	f.skipped = fmt.Sprintf(format, args...)
}

func TestNeedRoot(t *testing.T) {
	f := &fakeTB{TB: t}
	NeedRoot(f, "mount things")
	root := os.Geteuid() == 0
	if root && f.skipped != "" {
		t.Errorf("skipped as root: %q", f.skipped)
	}
	if !root && !strings.Contains(f.skipped, "mount things") {
		t.Errorf("as a user: skip message %q does not say why", f.skipped)
	}
}

func TestNeedPath(t *testing.T) {
	f := &fakeTB{TB: t}
	NeedPath(f, t.TempDir(), "for nothing")
	if f.skipped != "" {
		t.Errorf("skipped for a path that exists: %q", f.skipped)
	}
	NeedPath(f, filepath.Join(t.TempDir(), "missing"), "for nothing")
	if f.skipped == "" {
		t.Error("did not skip for a missing path")
	}
}

func TestShortDir(t *testing.T) {
	var d string
	t.Run("inner", func(t *testing.T) {
		d = ShortDir(t, "bgx")
		if len(d) > len(os.TempDir())+20 || !strings.Contains(filepath.Base(d), "bgx") {
			t.Errorf("ShortDir = %q: too long for a socket dir or not named by its prefix", d)
		}
		if fi, err := os.Stat(d); err != nil || !fi.IsDir() {
			t.Fatalf("ShortDir made no directory: %v", err)
		}
	})
	if _, err := os.Stat(d); !os.IsNotExist(err) {
		t.Errorf("%s is still there after its test ended: %v", d, err)
	}
}

func TestSyncBufferConcurrentWrites(t *testing.T) {
	var b SyncBuffer
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 100 {
				b.Write([]byte("x"))
			}
		}()
	}
	wg.Wait()
	if n := len(b.String()); n != 800 {
		t.Errorf("SyncBuffer holds %d bytes, want 800", n)
	}
}

func TestCopyTestBinary(t *testing.T) {
	bin := CopyTestBinary(t, t.TempDir(), "copy.test")
	fi, err := os.Stat(bin)
	if err != nil || fi.Mode().Perm() != 0o755 {
		t.Fatalf("copy: %v, %v", fi, err)
	}
	self, _ := os.Executable()
	orig, _ := os.Stat(self)
	if fi.Size() != orig.Size() {
		t.Errorf("copy is %d bytes, the binary %d", fi.Size(), orig.Size())
	}
}
