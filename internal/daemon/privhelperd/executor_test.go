package privhelperd

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/user"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/google/nftables"
	"github.com/google/nftables/userdata"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"banger/internal/daemon/dmsnap"
	"banger/internal/daemon/netmgr"
	"banger/internal/daemon/privops"
)

// These tests work inside network namespaces they create, so the host's
// own network is never touched.

func needNetRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to create network namespaces, bridges, taps and nftables tables")
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		t.Skipf("needs /dev/net/tun: %v", err)
	}
}

// inNS runs fn on a thread inside ns and returns its error.
func inNS(ns netns.NsHandle, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer orig.Close()
		if err := netns.Set(ns); err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		ferr := fn()
		if err := netns.Set(orig); err != nil {
			errc <- err // the thread stays locked and dies with the goroutine
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// testNS makes a network namespace for the test and returns its handle
// and a path that opens it.
func testNS(t *testing.T) (netns.NsHandle, string) {
	t.Helper()
	nsc := make(chan netns.NsHandle, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			nsc <- -1
			return
		}
		defer orig.Close()
		ns, err := netns.New()
		if err != nil {
			runtime.UnlockOSThread()
			nsc <- -1
			return
		}
		if err := netns.Set(orig); err != nil {
			nsc <- -1 // the thread stays locked and dies
			ns.Close()
			return
		}
		runtime.UnlockOSThread()
		nsc <- ns
	}()
	ns := <-nsc
	if ns < 0 {
		t.Skip("cannot create a network namespace here")
	}
	t.Cleanup(func() { ns.Close() })
	// A new namespace takes ip_forward from the host's: start from 0,
	// whatever banger or anything else did to the host.
	if err := inNS(ns, func() error {
		return os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("0\n"), 0o644)
	}); err != nil {
		t.Fatal(err)
	}
	return ns, fmt.Sprintf("/proc/%d/fd/%d", os.Getpid(), int(ns))
}

func nsHandle(t *testing.T, ns netns.NsHandle) *netlink.Handle {
	t.Helper()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	return h
}

func newExec(t *testing.T, cfg SystemConfig) *SystemExecutor {
	t.Helper()
	if cfg.SysctlDir == "" {
		cfg.SysctlDir = t.TempDir() // never the host's memory
	}
	e, err := NewSystemExecutor(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

// nftRules lists "table/chain comment" for every rule in ns, with the
// rule's handle when withHandles (handles change when a rule is re-added).
func nftRules(t *testing.T, ns netns.NsHandle, withHandles bool) []string {
	t.Helper()
	c, err := nftables.New(nftables.WithNetNSFd(int(ns)))
	if err != nil {
		t.Fatal(err)
	}
	chains, err := c.ListChains()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, ch := range chains {
		out = append(out, "chain "+ch.Table.Name+"/"+ch.Name)
		rules, err := c.GetRules(ch.Table, ch)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rules {
			cm, _ := userdata.GetString(r.UserData, userdata.TypeComment)
			s := ch.Table.Name + "/" + ch.Name + " " + cm
			if withHandles {
				s += fmt.Sprintf(" #%d", r.Handle)
			}
			out = append(out, s)
		}
	}
	slices.Sort(out)
	return out
}

func nftTables(t *testing.T, ns netns.NsHandle) []string {
	t.Helper()
	c, err := nftables.New(nftables.WithNetNSFd(int(ns)))
	if err != nil {
		t.Fatal(err)
	}
	ts, err := c.ListTables()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, tb := range ts {
		out = append(out, tb.Name)
	}
	return out
}

// linkState describes the links of ns: name, type, up, master, alias,
// addresses, and a tap's owner.
func linkState(t *testing.T, h *netlink.Handle) string {
	t.Helper()
	links, err := h.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, l := range links {
		a := l.Attrs()
		fmt.Fprintf(&b, "%s %s up=%v master=%d alias=%q", a.Name, l.Type(), a.Flags&net.FlagUp != 0, a.MasterIndex, a.Alias)
		if tt, ok := l.(*netlink.Tuntap); ok {
			fmt.Fprintf(&b, " owner=%d:%d", tt.Owner, tt.Group)
		}
		addrs, _ := h.AddrList(l, netlink.FAMILY_V4)
		for _, ad := range addrs {
			fmt.Fprintf(&b, " %s", ad.IPNet)
		}
		b.WriteString("\n")
	}
	return b.String()
}

func ipForward(t *testing.T, ns netns.NsHandle) string {
	t.Helper()
	var fwd []byte
	if err := inNS(ns, func() (err error) {
		fwd, err = os.ReadFile("/proc/sys/net/ipv4/ip_forward")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(fwd))
}

func groupOf(uid int) uint32 {
	if u, err := user.LookupId(strconv.Itoa(uid)); err == nil {
		g, _ := strconv.Atoi(u.Gid)
		return uint32(g)
	}
	return nogroup
}

func netSpec(bridge, subnet string) privops.NetSpec {
	return privops.NetSpec{Bridge: bridge, Subnet: netip.MustParsePrefix(subnet), TapPrefix: "bgtap", Table: netmgr.TableFor(bridge)}
}

// TestSystemExecutorNetworkOfOneUser drives the executor's view of one
// user, and checks that another user's view can take none of it over.
func TestSystemExecutorNetworkOfOneUser(t *testing.T) {
	needNetRoot(t)
	ns, path := testNS(t)
	h := nsHandle(t, ns)
	e := newExec(t, SystemConfig{NetNS: path})
	ctx := context.Background()
	const ua, ub = 65534, 4242
	a, b := e.For(ua), e.For(ub)
	n := netSpec("banger9", "10.200.3.0/24")

	if err := a.EnsureNetwork(ctx, n); err != nil {
		t.Fatal(err)
	}
	links1, rules1 := linkState(t, h), nftRules(t, ns, true)
	if err := a.EnsureNetwork(ctx, n); err != nil {
		t.Fatalf("second EnsureNetwork: %v", err)
	}
	if l, r := linkState(t, h), nftRules(t, ns, true); l != links1 || !slices.Equal(r, rules1) {
		t.Fatalf("the second EnsureNetwork changed state:\n%s%q\n---\n%s%q", links1, rules1, l, r)
	}
	br, err := h.LinkByName("banger9")
	if err != nil {
		t.Fatal(err)
	}
	if br.Type() != "bridge" || br.Attrs().Flags&net.FlagUp == 0 {
		t.Fatalf("banger9 is a %s with flags %v, want an up bridge", br.Type(), br.Attrs().Flags)
	}
	if br.Attrs().Alias != "banger uid=65534" {
		t.Errorf("bridge alias %q, want it marked as uid 65534's", br.Attrs().Alias)
	}
	addrs, err := h.AddrList(br, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	if len(addrs) != 1 || addrs[0].IPNet.String() != "10.200.3.1/24" {
		t.Fatalf("bridge addresses %v, want exactly 10.200.3.1/24", addrs)
	}
	if !slices.Contains(nftTables(t, ns), "banger-banger9") {
		t.Errorf("no nftables table banger-banger9 in %q", nftTables(t, ns))
	}
	if findRule(rules1, "banger-banger9/postrouting banger: masquerade 10.200.3.0/24 out of all but banger9") == "" {
		t.Errorf("no masquerade rule in %q", rules1)
	}
	if got := ipForward(t, ns); got != "1" {
		t.Errorf("ip_forward in the namespace is %q, want 1", got)
	}

	for i := range 2 {
		if err := a.CreateTap(ctx, n, "bgtaptest"); err != nil {
			t.Fatalf("CreateTap #%d: %v", i+1, err)
		}
	}
	l, err := h.LinkByName("bgtaptest")
	if err != nil {
		t.Fatal(err)
	}
	tap, ok := l.(*netlink.Tuntap)
	if !ok {
		t.Fatalf("bgtaptest is a %s, want a tap", l.Type())
	}
	if tap.Owner != ua || tap.Group != groupOf(ua) {
		t.Errorf("tap owner %d:%d, want %d:%d", tap.Owner, tap.Group, ua, groupOf(ua))
	}
	if tap.Attrs().MasterIndex != br.Attrs().Index || tap.Attrs().Flags&net.FlagUp == 0 {
		t.Errorf("tap master %d up=%v, want on the bridge (%d) and up", tap.Attrs().MasterIndex, tap.Attrs().Flags&net.FlagUp != 0, br.Attrs().Index)
	}
	guest := netip.MustParseAddrPort("10.200.3.2:8080")
	if err := a.Publish(ctx, n, privops.Publish{VMID: "vm1", HostPort: 18080, Guest: guest}); err != nil {
		t.Fatal(err)
	}
	pubA := "banger-banger9/prerouting banger: publish tcp/18080 vm=vm1 to=10.200.3.2:8080 uid=65534"
	if findRule(nftRules(t, ns, false), pubA) == "" {
		t.Fatalf("no %q in %q", pubA, nftRules(t, ns, false))
	}

	// Another user's view: refused on the bridge, the tap and the port.
	before, beforeRules := linkState(t, h), nftRules(t, ns, true)
	for _, c := range []struct {
		name string
		err  error
		want string
	}{
		{"ensure", b.EnsureNetwork(ctx, n), "bridge banger9 belongs to the banger of uid 65534, not 4242"},
		{"teardown", b.TeardownNetwork(ctx, n), "belongs to the banger of uid 65534"},
		{"create tap", b.CreateTap(ctx, n, "bgtapb"), "belongs to the banger of uid 65534"},
		{"create the other's tap", b.CreateTap(ctx, n, "bgtaptest"), "uid 65534"},
		{"delete the other's tap", b.DeleteTap(ctx, n, "bgtaptest"), "belongs to the banger of uid 65534"},
		{"publish", b.Publish(ctx, n, privops.Publish{VMID: "vm2", HostPort: 18081, Guest: guest}), "belongs to the banger of uid 65534"},
	} {
		if c.err == nil || !strings.Contains(c.err.Error(), c.want) {
			t.Errorf("uid %d's %s: %v, want a refusal with %q", ub, c.name, c.err, c.want)
		}
	}
	// Unpublishing on a bridge that is not the caller's is refused.
	for _, port := range []uint16{18080, 0} {
		if err := b.Unpublish(ctx, n, "vm1", port); err == nil || !strings.Contains(err.Error(), "belongs to the banger of uid 65534") {
			t.Errorf("uid %d's Unpublish(vm1, %d): %v, want a refusal", ub, port, err)
		}
	}
	if l, r := linkState(t, h), nftRules(t, ns, true); l != before || !slices.Equal(r, beforeRules) {
		t.Fatalf("another uid's refused requests changed state:\n%s%q\n---\n%s%q", before, beforeRules, l, r)
	}
	// Its own network, with a tap named like the first user's: refused.
	nb := netSpec("banger8", "10.200.4.0/24")
	if err := b.EnsureNetwork(ctx, nb); err != nil {
		t.Fatal(err)
	}
	if err := b.CreateTap(ctx, nb, "bgtaptest"); err == nil || !strings.Contains(err.Error(), "tap bgtaptest belongs to uid 65534, not 4242") {
		t.Errorf("uid %d's CreateTap of uid %d's tap on its own bridge: %v", ub, ua, err)
	}
	if err := b.DeleteTap(ctx, nb, "bgtaptest"); err == nil || !strings.Contains(err.Error(), "tap bgtaptest belongs to uid 65534, not 4242") {
		t.Errorf("uid %d's DeleteTap of uid %d's tap on its own bridge: %v", ub, ua, err)
	}
	if l, _ := h.LinkByName("bgtaptest"); l == nil || l.Attrs().MasterIndex != br.Attrs().Index {
		t.Error("the refused CreateTap or DeleteTap moved or removed the tap")
	}
	if err := b.TeardownNetwork(ctx, nb); err != nil {
		t.Fatal(err)
	}

	if err := a.Unpublish(ctx, n, "vm1", 18080); err != nil {
		t.Fatal(err)
	}
	if r := findRule(nftRules(t, ns, false), "publish tcp/18080"); r != "" {
		t.Errorf("the owner's Unpublish left %q", r)
	}
	if err := a.DeleteTap(ctx, n, "bgtaptest"); err != nil {
		t.Fatal(err)
	}
	if _, err := h.LinkByName("bgtaptest"); err == nil {
		t.Error("tap still exists after DeleteTap")
	}
	if err := a.DeleteTap(ctx, n, "bgtaptest"); err != nil {
		t.Errorf("DeleteTap of a missing tap: %v", err)
	}

	// Teardown takes the table, the bridge and banger's taps still on it.
	if err := a.CreateTap(ctx, n, "bgtapleft"); err != nil {
		t.Fatal(err)
	}
	if err := a.Publish(ctx, n, privops.Publish{VMID: "vm1", HostPort: 18080, Guest: guest}); err != nil {
		t.Fatal(err)
	}
	if err := a.TeardownNetwork(ctx, n); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"banger9", "bgtapleft", "banger8"} {
		if _, err := h.LinkByName(name); err == nil {
			t.Errorf("%s still exists after TeardownNetwork", name)
		}
	}
	if ts := nftTables(t, ns); len(ts) != 0 {
		t.Errorf("nftables tables left after teardown: %q", ts)
	}
	if got := ipForward(t, ns); got != "0" {
		t.Errorf("ip_forward after the last bridge's teardown is %q, want 0 as it was", got)
	}
	if err := a.TeardownNetwork(ctx, n); err != nil {
		t.Errorf("TeardownNetwork of a missing network: %v", err)
	}
	// The bridge was the user's, not the name: once it is gone, another
	// user may make one of that name.
	if err := b.EnsureNetwork(ctx, n); err != nil {
		t.Fatalf("uid %d's EnsureNetwork after the teardown: %v", ub, err)
	}
	if err := b.TeardownNetwork(ctx, n); err != nil {
		t.Fatal(err)
	}
}

// findRule returns the first entry of rules that contains s, or "".
func findRule(rules []string, s string) string {
	for _, r := range rules {
		if strings.Contains(r, s) {
			return r
		}
	}
	return ""
}

func TestSystemExecutorRefusesWhatIsNotItsKind(t *testing.T) {
	needNetRoot(t)
	ns, path := testNS(t)
	h := nsHandle(t, ns)
	e := newExec(t, SystemConfig{NetNS: path})
	ops := e.For(0)
	ctx := context.Background()
	// A tap named like a bridge, and a bridge named like a tap.
	if err := inNS(ns, func() error {
		return h.LinkAdd(&netlink.Tuntap{LinkAttrs: netlink.LinkAttrs{Name: "banger8"}, Mode: netlink.TUNTAP_MODE_TAP})
	}); err != nil {
		t.Fatal(err)
	}
	if err := h.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "bgtapbr"}}); err != nil {
		t.Fatal(err)
	}
	n8 := netSpec("banger8", "10.200.4.0/24")
	before := linkState(t, h)
	if err := ops.EnsureNetwork(ctx, n8); err == nil || !strings.Contains(err.Error(), "not a bridge") {
		t.Errorf("EnsureNetwork over a tap: %v", err)
	}
	if err := ops.TeardownNetwork(ctx, n8); err == nil {
		t.Error("TeardownNetwork deleted a tap")
	}
	if err := ops.DeleteTap(ctx, n8, "bgtapbr"); err == nil {
		t.Error("DeleteTap deleted a bridge")
	}
	if err := ops.CreateTap(ctx, n8, "bgtapx"); err == nil {
		t.Error("CreateTap put a tap on a non-bridge")
	}
	bad := netSpec("banger7", "10.200.4.0/24")
	bad.Subnet = netip.MustParsePrefix("10.200.4.1/24")
	if err := ops.EnsureNetwork(ctx, bad); err == nil {
		t.Error("EnsureNetwork accepted a subnet with host bits")
	}
	if got := linkState(t, h); got != before {
		t.Errorf("refused requests changed the links:\n%s---\n%s", before, got)
	}
	if ts := nftTables(t, ns); len(ts) != 0 {
		t.Errorf("refused requests made nftables tables %q", ts)
	}
}

// kernelHasDM reports whether /proc/misc lists device-mapper.
func kernelHasDM(t *testing.T) bool {
	b, err := os.ReadFile("/proc/misc")
	if err != nil {
		t.Skipf("cannot read /proc/misc: %v", err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) == 2 && f[1] == "device-mapper" {
			return true
		}
	}
	return false
}

// unusedCharMajor returns a character-device major number no driver has,
// so that opening a node of it fails with ENXIO, as /dev/mapper/control
// does when its driver is missing.
func unusedCharMajor(t *testing.T) uint32 {
	b, err := os.ReadFile("/proc/devices")
	if err != nil {
		t.Skipf("cannot read /proc/devices: %v", err)
	}
	used := map[uint32]bool{}
	inChar := false
	for _, l := range strings.Split(string(b), "\n") {
		switch {
		case strings.HasPrefix(l, "Character"):
			inChar = true
		case strings.HasPrefix(l, "Block"):
			inChar = false
		case inChar:
			if f := strings.Fields(l); len(f) == 2 {
				if n, err := strconv.Atoi(f[0]); err == nil {
					used[uint32(n)] = true
				}
			}
		}
	}
	for m := uint32(240); m < 255; m++ { // the range for local use
		if !used[m] {
			return m
		}
	}
	t.Skip("every character major from 240 to 254 has a driver")
	return 0
}

// inDevView runs fn on a thread in a mount namespace of its own where /dev
// holds only loop-control and, when control is "dead", a
// /dev/mapper/control node without a driver; and /proc/misc lists
// device-mapper when dmListed. The host's own /dev and /proc are never
// changed; the thread dies with fn.
func inDevView(t *testing.T, control string, dmListed bool, fn func()) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to make a mount namespace and device nodes")
	}
	dev, other := t.TempDir(), t.TempDir()
	if err := os.WriteFile(dev+"/loop-control", nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if control == "dead" {
		if err := os.Mkdir(dev+"/mapper", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := unix.Mknod(dev+"/mapper/control", unix.S_IFCHR|0o600, int(unix.Mkdev(unusedCharMajor(t), 0))); err != nil {
			t.Skipf("cannot make a device node here: %v", err)
		}
	}
	misc := "237 loop-control\n"
	if dmListed {
		misc += "236 device-mapper\n"
	}
	if err := os.WriteFile(other+"/misc", []byte(misc), 0o644); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		for _, step := range []func() error{
			func() error { return unix.Unshare(unix.CLONE_NEWNS) },
			func() error { return unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, "") },
			func() error { return unix.Mount(dev, "/dev", "", unix.MS_BIND, "") },
			func() error { return unix.Mount(other+"/misc", "/proc/misc", "", unix.MS_BIND, "") },
		} {
			if err := step(); err != nil {
				done <- err
				return
			}
		}
		fn()
		done <- nil
	}()
	if err := <-done; err != nil {
		t.Skipf("cannot make a mount namespace with a /dev of its own: %v", err)
	}
}

// TestSystemExecutorWithoutDeviceMapper: on a host without device-mapper,
// or whose /dev/mapper/control cannot be opened, the executor says why
// snapshots cannot be made and what to do; without device-mapper in the
// kernel it lists none and removes none without error. The host's own
// device-mapper does not matter: each case makes its own /dev.
func TestSystemExecutorWithoutDeviceMapper(t *testing.T) {
	e := newExec(t, SystemConfig{LockDir: t.TempDir()})
	ops := e.For(uint32(os.Getuid()))
	ctx := context.Background()
	for _, c := range []struct {
		name     string
		control  string
		dmListed bool
		want     []string
	}{
		{"no device-mapper", "missing", false, []string{"no device-mapper", "/dev/mapper/control", "modprobe dm_mod"}},
		{"a control node without its driver", "dead", false, []string{"device-mapper is not usable on this host", "open /dev/mapper/control", "modprobe dm_mod dm_snapshot", `cow = "copy"`}},
		{"device-mapper listed but not answering", "dead", true, []string{"device-mapper is not usable on this host", "open /dev/mapper/control", "modprobe dm_mod dm_snapshot", `cow = "copy"`}},
	} {
		t.Run(c.name, func(t *testing.T) {
			inDevView(t, c.control, c.dmListed, func() {
				err := ops.SnapshotsAvailable(ctx)
				if !errors.Is(err, dmsnap.ErrUnavailable) {
					t.Errorf("SnapshotsAvailable = %v, want dmsnap.ErrUnavailable", err)
					return
				}
				for _, w := range c.want {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("SnapshotsAvailable = %q: does not say %q", err, w)
					}
				}
				if c.dmListed {
					return // the kernel has device-mapper: its leftovers may exist
				}
				if l, err := ops.ListSnapshots(ctx); err != nil || len(l) != 0 {
					t.Errorf("ListSnapshots = %v, %v; want none", l, err)
				}
				if err := ops.RemoveSnapshot(ctx, "banger-none"); err != nil {
					t.Errorf("RemoveSnapshot of a snapshot that cannot exist: %v", err)
				}
			})
		})
	}
}
