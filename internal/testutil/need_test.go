package testutil

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
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
