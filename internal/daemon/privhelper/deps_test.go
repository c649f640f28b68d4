package privhelper_test

import (
	"os/exec"
	"strings"
	"testing"
)

// deps lists every package pkg links (`go list -deps`), tests excluded.
func deps(t *testing.T, pkg string) map[string]bool {
	t.Helper()
	gotool, err := exec.LookPath("go")
	if err != nil {
		t.Skipf("needs the go tool on PATH to list what %s links: %v", pkg, err)
	}
	out, err := exec.Command(gotool, "list", "-deps", pkg).Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		t.Fatalf("go list -deps %s: %v\n%s", pkg, err, stderr)
	}
	set := map[string]bool{}
	for _, p := range strings.Fields(string(out)) {
		set[p] = true
	}
	if !set[pkg] {
		t.Fatalf("go list -deps %s does not list %s itself:\n%s", pkg, pkg, out)
	}
	return set
}

// privileged is what does privileged work, or starts the daemon: no caller
// of the helper outside bangerd needs any of it.
var privileged = []string{
	"banger/internal/daemon",
	"banger/internal/daemon/privhelperd",
	"banger/internal/daemon/netmgr",
	"banger/internal/daemon/dmsnap",
	"banger/internal/daemon/sdnotify",
	"github.com/google/nftables",
	"github.com/vishvananda/netlink",
	"github.com/vishvananda/netns",
}

// TestCLILinksNoPrivilegedCode: the banger CLI talks to the helper (for
// `doctor`) through this package alone; it must not link the helper's
// server, the network and disk code it drives, or the daemon.
func TestCLILinksNoPrivilegedCode(t *testing.T) {
	got := deps(t, "banger/cmd/banger")
	for _, p := range privileged {
		if got[p] {
			t.Errorf("banger/cmd/banger links %s; reach the helper through privhelper only", p)
		}
	}
}

// TestProtocolImportsNothingHeavy: the protocol and client need the
// standard library and privops' value types, nothing else.
func TestProtocolImportsNothingHeavy(t *testing.T) {
	for p := range deps(t, "banger/internal/daemon/privhelper") {
		std := !strings.Contains(strings.SplitN(p, "/", 2)[0], ".") && !strings.HasPrefix(p, "banger/")
		if !std && p != "banger/internal/daemon/privhelper" && p != "banger/internal/daemon/privops" {
			t.Errorf("privhelper links %s; it may link only the standard library and privops", p)
		}
	}
}

// TestHelperServerLinksNoDaemon: `bangerd helper` runs as root and must not
// carry the daemon's subsystems (its store, config, operations, images).
func TestHelperServerLinksNoDaemon(t *testing.T) {
	got := deps(t, "banger/internal/daemon/privhelperd")
	for _, p := range []string{"banger/internal/daemon", "banger/internal/store", "banger/internal/config",
		"banger/internal/daemon/opstate", "banger/internal/daemon/imagemgr", "banger/internal/rpc", "modernc.org/sqlite"} {
		if got[p] {
			t.Errorf("privhelperd links %s, a part of the daemon the root helper must not carry", p)
		}
	}
}
