package fcproc

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestDecideJail(t *testing.T) {
	if os.Geteuid() != 0 {
		if j, why, _ := decideJail(Config{Name: "vm"}, "", "/var/lib/banger/jail", 7, 7); j != nil || !strings.Contains(why, "not root") {
			t.Errorf("non-root: %+v, %q", j, why)
		}
		t.Skip("the rest needs root")
	}
	dir := t.TempDir()
	fc := filepath.Join(dir, "firecracker")
	os.WriteFile(fc, []byte("#!/bin/sh\n"), 0o755)
	t.Setenv("PATH", dir) // no jailer on PATH either
	cfg := Config{Name: "vm-1", Binary: fc}
	if j, why, _ := decideJail(cfg, "", "/var/lib/banger/jail", 7, 7); j != nil || !strings.Contains(why, "no jailer installed") {
		t.Errorf("without a jailer: %+v, %q", j, why)
	}
	jailer := filepath.Join(dir, "jailer")
	os.WriteFile(jailer, []byte("#!/bin/sh\n"), 0o755)
	j, why, _ := decideJail(cfg, "", "/var/lib/banger/jail", 7, 8)
	if j == nil || j.Binary != jailer || j.UID != 7 || j.GID != 8 || j.BaseDir != "/var/lib/banger/jail" || !strings.Contains(why, "jailed by "+jailer+" as uid 7") {
		t.Errorf("with a jailer beside firecracker: %+v, %q", j, why)
	}
	// jailer_bin wins over the one beside firecracker, and must exist.
	other := filepath.Join(t.TempDir(), "my-jailer")
	os.WriteFile(other, []byte("#!/bin/sh\n"), 0o755)
	if j, why, err := decideJail(cfg, other, "/var/lib/banger/jail", 7, 7); err != nil || j == nil || j.Binary != other || !strings.Contains(why, other) {
		t.Errorf("jailer_bin: %+v, %q, %v", j, why, err)
	}
	if j, _, err := decideJail(cfg, other+".missing", "/var/lib/banger/jail", 7, 7); err == nil || j != nil || !strings.Contains(err.Error(), "jailer_bin") {
		t.Errorf("a missing jailer_bin: %+v, %v; want an error naming jailer_bin", j, err)
	}
	cfg.Name = strings.Repeat("n", 64)
	if j, why, _ := decideJail(cfg, "", "/var/lib/banger/jail", 7, 7); j != nil || !strings.Contains(why, "longer than") {
		t.Errorf("a name too long for the chroot's sockets: %+v, %q", j, why)
	}
}
