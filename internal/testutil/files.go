package testutil

import (
	"bytes"
	"os"
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
