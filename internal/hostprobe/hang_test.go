package hostprobe

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestVersionOfAHangingBinary: a firecracker_bin that is a script hanging
// on --version (its child keeps the output pipe open after the script is
// killed) must cost doctor CommandTimeout, not block it for ever.
func TestVersionOfAHangingBinary(t *testing.T) {
	old := CommandTimeout
	CommandTimeout = 300 * time.Millisecond
	t.Cleanup(func() { CommandTimeout = old })
	dir := t.TempDir()
	fc := filepath.Join(dir, "firecracker")
	if err := os.WriteFile(fc, []byte("#!/bin/sh\nsleep 60\necho never\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	done := make(chan Facts, 1)
	go func() {
		done <- Probe(context.Background(), Options{Host: Host{Root: t.TempDir()}, FirecrackerBin: fc, Versions: true})
	}()
	select {
	case f := <-done:
		if f.Firecracker.VersionErr == nil || !strings.Contains(f.Firecracker.VersionErr.Error(), "did not finish within") {
			t.Fatalf("VersionErr = %v; want a timeout", f.Firecracker.VersionErr)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Probe still waits on a firecracker --version that hangs")
	}
}
