package testutil

import (
	"bytes"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

// ShortDir makes a directory with a short path (under the system temp dir,
// named prefix plus a few random characters), removed when the test ends.
// Unix socket paths are limited to 108 bytes, and t.TempDir's can exceed
// that.
func ShortDir(t testing.TB, prefix string) string {
	t.Helper()
	d, err := os.MkdirTemp("", prefix)
	if err != nil {
		t.Fatalf("make a short temporary directory: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// SyncBuffer is a bytes.Buffer that a writer (a child's stdout, a logger)
// and the reading test may use at the same time.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String returns everything written so far.
func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// CopyTestBinary copies the running test binary to dir/name (mode 0755)
// and returns its path: for running the test again as another user, who
// may not reach the build cache it lives in.
func CopyTestBinary(t testing.TB, dir, name string) string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatalf("find the test binary: %v", err)
	}
	data, err := os.ReadFile(exe)
	if err != nil {
		t.Fatalf("read the test binary: %v", err)
	}
	bin := filepath.Join(dir, name)
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatalf("copy the test binary to %s: %v", bin, err)
	}
	return bin
}
