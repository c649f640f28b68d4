package testutil

import (
	"os"
	"testing"
)

// NeedRoot skips the test unless it runs as root. why completes "needs root
// to ...": what the test does that only root may ("create network
// namespaces").
func NeedRoot(t testing.TB, why string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skipf("needs root to %s (run the tests as root to cover it)", why)
	}
}

// NeedPath skips the test unless path exists. why says what the test wants
// it for.
func NeedPath(t testing.TB, path, why string) {
	t.Helper()
	if _, err := os.Stat(path); err != nil {
		t.Skipf("needs %s %s: %v", path, why, err)
	}
}
