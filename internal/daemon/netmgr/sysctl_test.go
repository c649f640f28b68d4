package netmgr

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"banger/internal/testutil/netnstest"

	"github.com/vishvananda/netns"
)

func forwardIn(t *testing.T, ns netns.NsHandle) string {
	t.Helper()
	v, err := readSysctlIn(ns, forwardKey)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func setForwardIn(t *testing.T, ns netns.NsHandle, v string) {
	t.Helper()
	if err := runIn(ns, func() error { _, err := setSysctl(forwardKey, v); return err }); err != nil {
		t.Fatal(err)
	}
}

// memories lists the memory files in dir.
func memories(t *testing.T, dir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "netns-*.json"))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func sysctlHost(t *testing.T, ns netns.NsHandle, dir string) *Host {
	t.Helper()
	h, err := NewHost(InNetNS(ns), RememberSysctlsIn(dir))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

// TestIPForwardPutBack: banger turns ip_forward on with the first bridge
// and puts it back with the last one of any user, also after a restart
// (a new Host on the same memory); it leaves alone what it did not change.
func TestIPForwardPutBack(t *testing.T) {
	needRoot(t)
	ctx := context.Background()
	na, nb := hostNet("bgfwd0", "10.200.21.0/24"), hostNet("bgfwd1", "10.200.22.0/24")

	t.Run("off before: back off after the last user's bridge", func(t *testing.T) {
		ns, dir := netnstest.New(t), t.TempDir()
		host := sysctlHost(t, ns, dir)
		a, b := host.As(1000, 1000), host.As(2000, 2000)
		if err := a.EnsureNetwork(ctx, na); err != nil {
			t.Fatal(err)
		}
		if got := forwardIn(t, ns); got != "1" {
			t.Fatalf("ip_forward after EnsureNetwork = %s, want 1", got)
		}
		mem := memories(t, dir)
		if len(mem) != 1 {
			t.Fatalf("memory files %v, want one", mem)
		}
		var s savedSysctls
		if b, err := os.ReadFile(mem[0]); err != nil || json.Unmarshal(b, &s) != nil || s.Prev[forwardKey] != "0" {
			t.Fatalf("memory %s = %+v (%v), want ip_forward 0 remembered", mem[0], s, err)
		}
		if err := b.EnsureNetwork(ctx, nb); err != nil {
			t.Fatal(err)
		}
		// Another uid's bridge is still up: forwarding stays on.
		if err := a.TeardownNetwork(ctx, na); err != nil {
			t.Fatal(err)
		}
		if got := forwardIn(t, ns); got != "1" {
			t.Fatalf("ip_forward with uid 2000's bridge still up = %s, want 1", got)
		}
		// A restarted daemon (a new Host on the same memory) puts it back.
		if err := sysctlHost(t, ns, dir).As(2000, 2000).TeardownNetwork(ctx, nb); err != nil {
			t.Fatal(err)
		}
		if got := forwardIn(t, ns); got != "0" {
			t.Fatalf("ip_forward after the last teardown = %s, want 0 as it was", got)
		}
		if mem := memories(t, dir); len(mem) != 0 {
			t.Fatalf("memory left after restoring: %v", mem)
		}
		// A second teardown changes nothing.
		if err := a.TeardownNetwork(ctx, na); err != nil || forwardIn(t, ns) != "0" {
			t.Fatalf("second teardown: %v, ip_forward %s", err, forwardIn(t, ns))
		}
	})

	t.Run("on before: left on", func(t *testing.T) {
		ns, dir := netnstest.New(t), t.TempDir()
		setForwardIn(t, ns, "1")
		host := sysctlHost(t, ns, dir)
		if err := host.EnsureNetwork(ctx, na); err != nil {
			t.Fatal(err)
		}
		if mem := memories(t, dir); len(mem) != 0 {
			t.Fatalf("memory %v of a sysctl banger did not change", mem)
		}
		if err := host.TeardownNetwork(ctx, na); err != nil {
			t.Fatal(err)
		}
		if got := forwardIn(t, ns); got != "1" {
			t.Fatalf("ip_forward = %s after teardown, want 1 as it was", got)
		}
	})

	t.Run("turned off by someone else meanwhile: left off", func(t *testing.T) {
		ns, dir := netnstest.New(t), t.TempDir()
		host := sysctlHost(t, ns, dir)
		if err := host.EnsureNetwork(ctx, na); err != nil {
			t.Fatal(err)
		}
		setForwardIn(t, ns, "0")
		if err := host.TeardownNetwork(ctx, na); err != nil {
			t.Fatal(err)
		}
		if got, mem := forwardIn(t, ns), memories(t, dir); got != "0" || len(mem) != 0 {
			t.Fatalf("ip_forward %s, memory %v; want 0 and none", got, mem)
		}
	})

	t.Run("memory of another namespace or boot is not used", func(t *testing.T) {
		ns, dir := netnstest.New(t), t.TempDir()
		setForwardIn(t, ns, "1")
		host := sysctlHost(t, ns, dir)
		id, err := host.nsIdentity()
		if err != nil {
			t.Fatal(err)
		}
		stale := id
		stale.BootID = "another boot"
		stale.Prev = map[string]string{forwardKey: "0"}
		if err := host.writeMemory(stale); err != nil {
			t.Fatal(err)
		}
		if err := host.EnsureNetwork(ctx, na); err != nil {
			t.Fatal(err)
		}
		if err := host.TeardownNetwork(ctx, na); err != nil {
			t.Fatal(err)
		}
		if got, mem := forwardIn(t, ns), memories(t, dir); got != "1" || len(mem) != 0 {
			t.Fatalf("ip_forward %s, memory %v; want 1 (a stale memory is not obeyed) and none", got, mem)
		}
	})

	t.Run("no memory, no change", func(t *testing.T) {
		ns := netnstest.New(t)
		file := filepath.Join(t.TempDir(), "file")
		os.WriteFile(file, nil, 0o644)
		host := sysctlHost(t, ns, filepath.Join(file, "sysctl"))
		err := host.EnsureNetwork(ctx, na)
		if err == nil || !strings.Contains(err.Error(), file) {
			t.Fatalf("EnsureNetwork with an unusable memory dir = %v, want an error naming it", err)
		}
		if got := forwardIn(t, ns); got != "0" {
			t.Fatalf("ip_forward = %s, want 0: banger must not change what it cannot put back", got)
		}
	})
}
