package initrd

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// A Debian-like tree: merged /usr, /sbin/init a relative link to systemd,
// the agent's unit enabled under sysinit.target, a /run directory.
func systemdTree(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	for _, d := range []string{"usr/sbin", "usr/lib/systemd", "etc/systemd/system/sysinit.target.wants", "run"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.WriteFile(filepath.Join(root, "usr/lib/systemd/systemd"), []byte("#!/bin/sh\n"), 0o755))
	must(os.Symlink("usr/sbin", filepath.Join(root, "sbin")))
	must(os.Symlink("../lib/systemd/systemd", filepath.Join(root, "usr/sbin/init")))
	must(os.Symlink("/etc/systemd/system/banger-agent.service", filepath.Join(root, AgentUnitLink)))
	return root
}

func TestEarlyAgentWanted(t *testing.T) {
	root := systemdTree(t)
	if !earlyAgentWanted(root, "/sbin/init", true) {
		t.Fatal("a systemd image with the agent's unit and this build's agent: not wanted")
	}
	if earlyAgentWanted(root, "/sbin/init", false) {
		t.Error("an agent of another build (which may not know the early agent's file): wanted")
	}
	// init= the agent itself (images without systemd), or another init.
	if err := os.WriteFile(filepath.Join(root, "usr/sbin/agent-init"), []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if earlyAgentWanted(root, "/sbin/agent-init", true) {
		t.Error("an init that is not systemd: wanted")
	}
	if earlyAgentWanted(root, "/sbin/missing", true) {
		t.Error("a missing init: wanted")
	}
	// The units not enabled: systemd would never start the serving agent,
	// so nothing says the image wants one.
	noUnit := systemdTree(t)
	if err := os.Remove(filepath.Join(noUnit, AgentUnitLink)); err != nil {
		t.Fatal(err)
	}
	if earlyAgentWanted(noUnit, "/sbin/init", true) {
		t.Error("an image without the agent's unit: wanted")
	}
	noRun := systemdTree(t)
	if err := os.Remove(filepath.Join(noRun, "run")); err != nil {
		t.Fatal(err)
	}
	if earlyAgentWanted(noRun, "/sbin/init", true) {
		t.Error("an image without /run: wanted")
	}
	// A /run that is a link (to /var/run, say): mounting over it would
	// mount over its target.
	if err := os.Symlink("var/run", filepath.Join(noRun, "run")); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(noRun, "var/run"), 0o755); err != nil {
		t.Fatal(err)
	}
	if earlyAgentWanted(noRun, "/sbin/init", true) {
		t.Error("an image whose /run is a link: wanted")
	}
}

// TestEarlyAgentNofile: the early agent, and every command `vm exec` starts
// from it, would keep the kernel's open-files limit for init (hard 4096)
// where the agent's unit gives systemd's service default (hard 524288): a
// `vm exec -- ulimit -n 65536` that works under the unit failed. The
// initramfs gives it the unit's limit, never lowering a larger one.
func TestEarlyAgentNofile(t *testing.T) {
	for _, c := range []struct{ cur, want syscall.Rlimit }{
		{syscall.Rlimit{Cur: 4096, Max: 4096}, syscall.Rlimit{Cur: 1024, Max: 524288}},
		{syscall.Rlimit{Cur: 1024, Max: 4096}, syscall.Rlimit{Cur: 1024, Max: 524288}},
		{syscall.Rlimit{Cur: 1 << 20, Max: 1 << 20}, syscall.Rlimit{Cur: 1024, Max: 1 << 20}},
		{syscall.Rlimit{Cur: 512, Max: 512}, syscall.Rlimit{Cur: 512, Max: 524288}},
	} {
		if got := serviceNofile(c.cur); got != c.want {
			t.Errorf("from %+v: %+v, want %+v", c.cur, got, c.want)
		}
	}
}
