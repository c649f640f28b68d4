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

// TestNonExecutableFirecrackerBin: a firecracker_bin that is a file without
// an execute bit (or one only another user may run) is not a Firecracker
// bangerd can start, so auto must fall back to QEMU even with a usable KVM,
// as doctor says.
func TestNonExecutableFirecrackerBin(t *testing.T) {
	f := newFakeRoot(t)
	f.add("dev/kvm", "x")
	f.add("sys/module/kvm_intel", "")
	fc := filepath.Join(t.TempDir(), "firecracker")
	if err := os.WriteFile(fc, []byte("#!/bin/sh\necho Firecracker v1.14.2\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	facts := ProbeVMM(f.host(), fc, "")
	if facts.Firecracker.Found() {
		t.Fatalf("a firecracker_bin without an execute bit is found: %+v", facts.Firecracker)
	}
	kind, why, err := ChooseVMM(Auto, facts)
	if err != nil || kind != VMMQEMU || !strings.Contains(why, "not an executable file") {
		t.Fatalf("ChooseVMM(auto) = %q, %q, %v; want qemu because firecracker_bin cannot run", kind, why, err)
	}
	if _, _, err := ChooseVMM(VMMFirecracker, facts); err == nil {
		t.Fatal("ChooseVMM(firecracker) with a non-executable firecracker_bin succeeds")
	}
}
