package netmgr

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"banger/internal/daemon/privops"
	"banger/internal/testutil/netnstest"
)

func TestTableFor(t *testing.T) {
	for bridge, want := range map[string]string{
		"":        "banger",
		"banger0": "banger",
		"banger5": "banger-banger5",
		"bgtest0": "banger-bgtest0",
	} {
		if got := TableFor(bridge); got != want {
			t.Errorf("TableFor(%q) = %q, want %q", bridge, got, want)
		}
	}
}

func TestParsePublish(t *testing.T) {
	to := netip.MustParseAddrPort("10.200.0.2:80")
	for _, c := range []struct {
		comment string
		port    uint16
		vm      string
		uid     int
		ok      bool
	}{
		{publishComment(18080, "vm1", to, 1000), 18080, "vm1", 1000, true},
		{publishComment(1, "a", to, 0), 1, "a", 0, true},
		// Written by a banger from before rules carried a uid.
		{"banger: publish tcp/18080 vm=vm1 to=10.200.0.2:80", 18080, "vm1", -1, true},
		{"banger: publish tcp/18080 vm=vm1 to=10.200.0.2:80 uid=x", 18080, "vm1", -1, true},
		{"banger: publish tcp/99999 vm=vm1", 0, "", 0, false},
		{"banger: publish tcp/80", 0, "", 0, false},
		{"banger: publish tcp/80 to=10.200.0.2:80", 0, "", 0, false},
		{"banger: masquerade 10.200.0.0/24 out of all but banger0", 0, "", 0, false},
		{"", 0, "", 0, false},
	} {
		port, vm, uid, ok := parsePublish(c.comment)
		if port != c.port || vm != c.vm || uid != c.uid || ok != c.ok {
			t.Errorf("parsePublish(%q) = %d, %q, %d, %v; want %d, %q, %d, %v", c.comment, port, vm, uid, ok, c.port, c.vm, c.uid, c.ok)
		}
	}
}

func newHost(t *testing.T, ns netns.NsHandle) *Host {
	t.Helper()
	h, err := NewHost(InNetNS(ns), RememberSysctlsIn(t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

func hostNet(bridge, subnet string) privops.NetSpec {
	return privops.NetSpec{Bridge: bridge, Subnet: netip.MustParsePrefix(subnet), TapPrefix: "bgtap", Table: TableFor(bridge)}
}

func wantErr(t *testing.T, what string, err error, text string) {
	t.Helper()
	if err == nil || !strings.Contains(err.Error(), text) {
		t.Errorf("%s: %v, want an error with %q", what, err, text)
	}
}

func tapOwner(t *testing.T, h *netlink.Handle, name string) (uint32, uint32) {
	t.Helper()
	l, err := h.LinkByName(name)
	if err != nil {
		t.Fatalf("tap %s: %v", name, err)
	}
	tt, ok := l.(*netlink.Tuntap)
	if !ok {
		t.Fatalf("%s is a %s, not a tap", name, l.Type())
	}
	return tt.Owner, tt.Group
}

func alias(t *testing.T, h *netlink.Handle, name string) string {
	t.Helper()
	l, err := h.LinkByName(name)
	if err != nil {
		t.Fatalf("link %s: %v", name, err)
	}
	return l.Attrs().Alias
}

// TestHostOwnership: a bridge and its taps belong to the uid whose view
// made them; another uid's view can neither use nor remove them.
func TestHostOwnership(t *testing.T) {
	needRoot(t)
	ns := netnstest.New(t)
	h := netnstest.Handle(t, ns)
	host := newHost(t, ns)
	ctx := context.Background()
	empty := snapshot(t, ns, false)
	a, b := host.As(1000, 1000), host.As(2000, 2001)
	na, nb := hostNet("bghost0", "10.200.7.0/24"), hostNet("bghost1", "10.200.8.0/24")

	if err := a.EnsureNetwork(ctx, na); err != nil {
		t.Fatal(err)
	}
	if got := alias(t, h, "bghost0"); got != "banger uid=1000" {
		t.Errorf("bridge alias %q, want %q", got, "banger uid=1000")
	}
	if err := a.CreateTap(ctx, na, "bgtapa1"); err != nil {
		t.Fatal(err)
	}
	if u, g := tapOwner(t, h, "bgtapa1"); u != 1000 || g != 1000 {
		t.Errorf("tap owner %d:%d, want 1000:1000", u, g)
	}

	before := snapshot(t, ns, true)
	wantErr(t, "uid 2000's EnsureNetwork on uid 1000's bridge", b.EnsureNetwork(ctx, na),
		"bridge bghost0 belongs to the banger of uid 1000, not 2000; each user needs their own bridge_name and bridge_subnet")
	wantErr(t, "uid 2000's TeardownNetwork of uid 1000's bridge", b.TeardownNetwork(ctx, na), "belongs to the banger of uid 1000")
	wantErr(t, "uid 2000's CreateTap on uid 1000's bridge", b.CreateTap(ctx, na, "bgtapb1"), "belongs to the banger of uid 1000")
	wantErr(t, "uid 2000's DeleteTap on uid 1000's bridge", b.DeleteTap(ctx, na, "bgtapa1"), "belongs to the banger of uid 1000")
	wantErr(t, "uid 2000's Publish on uid 1000's bridge", b.Publish(ctx, na, privops.Publish{VMID: "vm2", HostPort: 18081, Guest: netip.MustParseAddrPort("10.200.7.3:80")}),
		"belongs to the banger of uid 1000")
	if got := snapshot(t, ns, true); got != before {
		t.Fatalf("another uid's refused calls changed state:\n--- before\n%s\n--- after\n%s", before, got)
	}

	// On its own bridge, uid 2000 has its own taps, and still cannot take
	// over uid 1000's tap by naming it.
	if err := b.EnsureNetwork(ctx, nb); err != nil {
		t.Fatal(err)
	}
	if got := alias(t, h, "bghost1"); got != "banger uid=2000" {
		t.Errorf("bridge alias %q, want %q", got, "banger uid=2000")
	}
	wantErr(t, "uid 2000's CreateTap of uid 1000's tap", b.CreateTap(ctx, nb, "bgtapa1"), "tap bgtapa1 belongs to uid 1000, not 2000")
	wantErr(t, "uid 2000's DeleteTap of uid 1000's tap", b.DeleteTap(ctx, nb, "bgtapa1"), "tap bgtapa1 belongs to uid 1000, not 2000")
	if _, err := h.LinkByName("bgtapa1"); err != nil {
		t.Fatal("a refused DeleteTap removed the tap")
	}
	if err := b.CreateTap(ctx, nb, "bgtapb1"); err != nil {
		t.Fatal(err)
	}
	if u, g := tapOwner(t, h, "bgtapb1"); u != 2000 || g != 2001 {
		t.Errorf("tap owner %d:%d, want 2000:2001", u, g)
	}
	wantErr(t, "uid 1000's DeleteTap of uid 2000's tap", a.DeleteTap(ctx, na, "bgtapb1"), "tap bgtapb1 belongs to uid 2000, not 1000")
	if _, err := h.LinkByName("bgtapb1"); err != nil {
		t.Fatal("a refused DeleteTap removed the tap")
	}

	// Tap names outside the network's prefix are refused before anything.
	wantErr(t, "CreateTap outside the prefix", a.CreateTap(ctx, na, "vnet0"), `tap "vnet0" does not start with the network's tap prefix "bgtap"`)
	wantErr(t, "DeleteTap outside the prefix", a.DeleteTap(ctx, na, "eth0"), `does not start with the network's tap prefix`)
	noPrefix := na
	noPrefix.TapPrefix = ""
	wantErr(t, "DeleteTap with no prefix", a.DeleteTap(ctx, noPrefix, "bgtapa1"), `tap prefix "" is not a valid interface name`)

	// A bridge with no owner's mark (made by hand, or by an older banger)
	// is refused to a user, and adopted by root.
	if err := h.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "bghost2"}}); err != nil {
		t.Fatal(err)
	}
	nc := hostNet("bghost2", "10.200.9.0/24")
	wantErr(t, "uid 2000's EnsureNetwork on an unmarked bridge", b.EnsureNetwork(ctx, nc), "is not marked as a banger bridge of uid 2000")
	if got := alias(t, h, "bghost2"); got != "" {
		t.Errorf("a refused Ensure marked the bridge: %q", got)
	}
	if err := host.As(0, 0).EnsureNetwork(ctx, nc); err != nil {
		t.Fatal(err)
	}
	if got := alias(t, h, "bghost2"); got != "banger uid=0" {
		t.Errorf("unmarked bridge's alias after root's Ensure: %q, want %q", got, "banger uid=0")
	}
	wantErr(t, "uid 1000's EnsureNetwork on the bridge root took", a.EnsureNetwork(ctx, nc), "belongs to the banger of uid 0")

	// A view shares its Host's socket: closing it leaves the Host working.
	if err := host.As(3000, 3000).Close(); err != nil {
		t.Fatal(err)
	}
	if err := a.EnsureNetwork(ctx, na); err != nil {
		t.Fatalf("EnsureNetwork after a view was closed: %v", err)
	}
	// The Host itself acts for the process's own uid.
	nd := hostNet("bghost3", "10.200.10.0/24")
	if err := host.EnsureNetwork(ctx, nd); err != nil {
		t.Fatal(err)
	}
	if got, want := alias(t, h, "bghost3"), "banger uid="+strconv.Itoa(os.Getuid()); got != want {
		t.Errorf("NewHost's bridge alias %q, want %q", got, want)
	}

	for _, c := range []struct {
		v *Host
		n privops.NetSpec
	}{{a, na}, {b, nb}, {host.As(0, 0), nc}, {host, nd}} {
		if err := c.v.TeardownNetwork(ctx, c.n); err != nil {
			t.Fatal(err)
		}
	}
	// The last teardown puts ip_forward back to 0, as it was.
	if got := snapshot(t, ns, false); got != empty {
		t.Fatalf("teardown left state behind:\n--- before\n%s\n--- after\n%s", empty, got)
	}
}

// addRule puts a published-port rule with comment into both chains of
// n's table, as another banger (older, or another uid's) would have.
func addRule(t *testing.T, ns netns.NsHandle, n privops.NetSpec, port uint16, to netip.AddrPort, comment string) {
	t.Helper()
	c, err := nftables.New(nftables.WithNetNSFd(int(ns)))
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{chainPrerouting, chainOutput} {
		c.AddRule(dnatRule(&nftables.Chain{Name: name, Table: table(n)}, port, to, comment))
	}
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
}

// publishRules lists the comments of the published-port rules of n, chain
// by chain.
func publishRules(t *testing.T, ns netns.NsHandle, n privops.NetSpec) []string {
	t.Helper()
	c, err := nftables.New(nftables.WithNetNSFd(int(ns)))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, name := range []string{chainPrerouting, chainOutput} {
		ch := &nftables.Chain{Name: name, Table: table(n)}
		rules, err := c.GetRules(ch.Table, ch)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rules {
			out = append(out, name+": "+comment(r))
		}
	}
	return out
}

func TestHostPublishIsTheUIDs(t *testing.T) {
	needRoot(t)
	ns := netnstest.New(t)
	host := newHost(t, ns)
	ctx := context.Background()
	a, b := host.As(1000, 1000), host.As(2000, 2000)
	n := hostNet("bghost0", "10.200.7.0/24")
	guest := netip.MustParseAddrPort("10.200.7.2:8080")

	if err := a.Publish(ctx, n, privops.Publish{VMID: "vm1", HostPort: 18080, Guest: guest}); err != nil {
		t.Fatal(err)
	}
	const want = "banger: publish tcp/18080 vm=vm1 to=10.200.7.2:8080 uid=1000"
	if got := publishRules(t, ns, n); !slices.Equal(got, []string{"prerouting: " + want, "output: " + want}) {
		t.Fatalf("published rules %q, want %q in both chains", got, want)
	}
	if p, err := a.Published(ctx, n); err != nil || len(p) != 1 || p[18080] != "vm1" {
		t.Fatalf("Published = %v, %v", p, err)
	}
	// Another uid removes nothing of it, by port or all of the VM's: the
	// bridge is not theirs.
	for _, port := range []uint16{18080, 0} {
		wantErr(t, fmt.Sprintf("uid 2000's Unpublish(vm1, %d)", port), b.Unpublish(ctx, n, "vm1", port), "belongs to the banger of uid 1000")
	}
	if got := publishRules(t, ns, n); len(got) != 2 {
		t.Fatalf("another uid's Unpublish removed rules: %q left", got)
	}
	wantErr(t, "publishing a taken port for another VM", a.Publish(ctx, n, privops.Publish{VMID: "vm2", HostPort: 18080, Guest: guest}),
		"host port 18080 is already published for VM vm1")

	// A rule of another uid in the table (the same VM id, even) is not
	// this uid's to replace or remove.
	addRule(t, ns, n, 18082, guest, publishComment(18082, "vm3", guest, 2000))
	wantErr(t, "publishing over another uid's port", a.Publish(ctx, n, privops.Publish{VMID: "vm3", HostPort: 18082, Guest: guest}),
		"host port 18082 is already published for VM vm3")
	if err := a.Unpublish(ctx, n, "vm3", 0); err != nil {
		t.Fatal(err)
	}
	if got := publishRules(t, ns, n); len(got) != 4 {
		t.Fatalf("uid 1000's Unpublish(vm3) touched uid 2000's rules: %q left", got)
	}

	if err := a.Unpublish(ctx, n, "vm1", 0); err != nil {
		t.Fatal(err)
	}
	for _, r := range publishRules(t, ns, n) {
		if strings.Contains(r, "vm=vm1") {
			t.Errorf("Unpublish left %q", r)
		}
	}
	if err := a.Unpublish(ctx, n, "vm1", 0); err != nil {
		t.Errorf("second Unpublish: %v", err)
	}
	// Bad input is refused before anything.
	wantErr(t, "Publish to a guest outside the subnet", a.Publish(ctx, n, privops.Publish{VMID: "vm1", HostPort: 18083, Guest: netip.MustParseAddrPort("10.200.8.2:80")}), "outside 10.200.7.0/24")
	wantErr(t, "Publish of port 0", a.Publish(ctx, n, privops.Publish{VMID: "vm1", HostPort: 0, Guest: guest}), "ports are 1 to 65535")
	wantErr(t, "Publish for a bad VM id", a.Publish(ctx, n, privops.Publish{VMID: "has space", HostPort: 18083, Guest: guest}), "VM id")
	wantErr(t, "Unpublish for a bad VM id", a.Unpublish(ctx, n, "", 0), "VM id")
	if err := a.TeardownNetwork(ctx, n); err != nil {
		t.Fatal(err)
	}
	// Unpublish on a network that is not there finds nothing to remove.
	if err := a.Unpublish(ctx, n, "vm1", 0); err != nil {
		t.Errorf("Unpublish with no table: %v", err)
	}
}

// TestHostUnpublishLegacyRule: a rule from a banger that did not tag
// published ports with a uid (a root bangerd's, in table banger) is root's:
// root's Unpublish of the VM removes it and root's Publish replaces it, a
// user's do neither.
func TestHostUnpublishLegacyRule(t *testing.T) {
	needRoot(t)
	ns := netnstest.New(t)
	host := newHost(t, ns)
	ctx := context.Background()
	a := host.As(0, 0)
	n := hostNet("bghost0", "10.200.7.0/24")
	if err := a.EnsureNetwork(ctx, n); err != nil {
		t.Fatal(err)
	}
	to := netip.MustParseAddrPort("10.200.7.2:80")
	addRule(t, ns, n, 18090, to, "banger: publish tcp/18090 vm=vmold to=10.200.7.2:80")
	addRule(t, ns, n, 18091, to, "banger: publish tcp/18091 vm=vmold to=10.200.7.2:80")
	addRule(t, ns, n, 18092, to, "banger: publish tcp/18092 vm=vmother to=10.200.7.2:80")

	// A user's view of a table with such rules (its own bridge) leaves them.
	u := host.As(1000, 1000)
	nu := hostNet("bghost1", "10.200.8.0/24")
	if err := u.EnsureNetwork(ctx, nu); err != nil {
		t.Fatal(err)
	}
	addRule(t, ns, nu, 18093, netip.MustParseAddrPort("10.200.8.2:80"), "banger: publish tcp/18093 vm=vmold to=10.200.8.2:80")
	if err := u.Unpublish(ctx, nu, "vmold", 0); err != nil {
		t.Fatal(err)
	}
	if got := publishRules(t, ns, nu); len(got) != 2 {
		t.Fatalf("a user's Unpublish removed a rule without a uid: %q left", got)
	}
	// Nor does a user's Publish of the same port for the same VM replace it.
	wantErr(t, "a user's Publish over a rule without a uid", u.Publish(ctx, nu, privops.Publish{VMID: "vmold", HostPort: 18093, Guest: netip.MustParseAddrPort("10.200.8.2:80")}),
		"host port 18093 is published for VM vmold by a rule of an older banger, which only root may replace")
	if got := publishRules(t, ns, nu); len(got) != 2 || !strings.HasSuffix(got[0], "to=10.200.8.2:80") {
		t.Fatalf("a user's refused Publish changed the rules without a uid: %q", got)
	}
	// Root's Publish replaces such a rule with one that carries its uid.
	if err := a.Publish(ctx, n, privops.Publish{VMID: "vmother", HostPort: 18092, Guest: to}); err != nil {
		t.Fatal(err)
	}
	want0 := publishComment(18092, "vmother", to, 0)
	if got := publishRules(t, ns, n); !slices.Contains(got, "prerouting: "+want0) || slices.Contains(got, "prerouting: banger: publish tcp/18092 vm=vmother to=10.200.7.2:80") {
		t.Fatalf("root's Publish over a rule without a uid: %q", got)
	}
	if err := a.Unpublish(ctx, n, "vmold", 18091); err != nil {
		t.Fatal(err)
	}
	for _, r := range publishRules(t, ns, n) {
		if strings.Contains(r, "tcp/18091") {
			t.Fatalf("Unpublish(vmold, 18091) left %q", r)
		}
	}
	if err := a.Unpublish(ctx, n, "vmold", 0); err != nil {
		t.Fatal(err)
	}
	want := []string{"prerouting: " + want0, "output: " + want0}
	if got := publishRules(t, ns, n); !slices.Equal(got, want) {
		t.Fatalf("after Unpublish(vmold): %q, want only vmother's %q", got, want)
	}
	if err := a.TeardownNetwork(ctx, n); err != nil {
		t.Fatal(err)
	}
}

// TestHostRefusesBadSpecs: a network that is not well formed is refused
// by every call, with nothing changed.
func TestHostRefusesBadSpecs(t *testing.T) {
	needRoot(t)
	ns := netnstest.New(t)
	host := newHost(t, ns)
	ctx := context.Background()
	before := snapshot(t, ns, true)
	good := hostNet("bghost0", "10.200.7.0/24")
	for name, change := range map[string]func(*privops.NetSpec){
		"no bridge":              func(n *privops.NetSpec) { n.Bridge = "" },
		"bridge with a slash":    func(n *privops.NetSpec) { n.Bridge = "bg/host" },
		"bridge name too long":   func(n *privops.NetSpec) { n.Bridge = "bghost0123456789" },
		"no tap prefix":          func(n *privops.NetSpec) { n.TapPrefix = "" },
		"tap prefix with colon":  func(n *privops.NetSpec) { n.TapPrefix = "bg:" },
		"subnet with host bits":  func(n *privops.NetSpec) { n.Subnet = netip.MustParsePrefix("10.200.7.1/24") },
		"subnet /31":             func(n *privops.NetSpec) { n.Subnet = netip.MustParsePrefix("10.200.7.0/31") },
		"IPv6 subnet":            func(n *privops.NetSpec) { n.Subnet = netip.MustParsePrefix("fd00::/64") },
		"no subnet":              func(n *privops.NetSpec) { n.Subnet = netip.Prefix{} },
		"no table":               func(n *privops.NetSpec) { n.Table = "" },
		"table with a space":     func(n *privops.NetSpec) { n.Table = "banger x" },
		"table name over 255 ch": func(n *privops.NetSpec) { n.Table = strings.Repeat("t", 256) },
	} {
		n := good
		change(&n)
		if err := host.EnsureNetwork(ctx, n); err == nil {
			t.Errorf("%s: EnsureNetwork accepted %+v", name, n)
		}
		if err := host.TeardownNetwork(ctx, n); err == nil {
			t.Errorf("%s: TeardownNetwork accepted %+v", name, n)
		}
		if err := host.CreateTap(ctx, n, n.TapPrefix+"1"); err == nil {
			t.Errorf("%s: CreateTap accepted %+v", name, n)
		}
		if err := host.DeleteTap(ctx, n, n.TapPrefix+"1"); err == nil {
			t.Errorf("%s: DeleteTap accepted %+v", name, n)
		}
		// A guest inside the subnet, where there is one, so that only the
		// network is wrong.
		guest := netip.MustParseAddrPort("10.200.7.2:80")
		if n.Subnet.IsValid() && n.Subnet.Addr().Is4() {
			guest = netip.AddrPortFrom(n.Subnet.Addr().Next().Next(), 80)
		}
		if err := host.Publish(ctx, n, privops.Publish{VMID: "vm1", HostPort: 18080, Guest: guest}); err == nil {
			t.Errorf("%s: Publish accepted %+v", name, n)
		}
		if err := host.Unpublish(ctx, n, "vm1", 0); err == nil {
			t.Errorf("%s: Unpublish accepted %+v", name, n)
		}
	}
	if got := snapshot(t, ns, true); got != before {
		t.Fatalf("refused specs changed state:\n--- before\n%s\n--- after\n%s", before, got)
	}
}

// TestPublishRefusesPortOfAnotherNetwork: two banger networks on one host
// (two users' bridges) cannot publish the same host port.
func TestPublishRefusesPortOfAnotherNetwork(t *testing.T) {
	needRoot(t)
	ns := netnstest.New(t)
	h, err := NewHost(InNetNS(ns))
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	ctx := context.Background()
	a := privops.NetSpec{Bridge: "banger7", Subnet: netip.MustParsePrefix("10.200.7.0/24"), TapPrefix: "bgtap", Table: TableFor("banger7")}
	b := privops.NetSpec{Bridge: "banger8", Subnet: netip.MustParsePrefix("10.200.8.0/24"), TapPrefix: "bgtap", Table: TableFor("banger8")}
	ua, ub := h.As(1001, 1001), h.As(1002, 1002)
	if err := ua.Publish(ctx, a, privops.Publish{VMID: "vma", HostPort: 18090, Guest: netip.MustParseAddrPort("10.200.7.2:80")}); err != nil {
		t.Fatal(err)
	}
	err = ub.Publish(ctx, b, privops.Publish{VMID: "vmb", HostPort: 18090, Guest: netip.MustParseAddrPort("10.200.8.2:80")})
	if err == nil || !strings.Contains(err.Error(), "another banger network") {
		t.Fatalf("second network publishing the same port: %v", err)
	}
	if err := ub.Publish(ctx, b, privops.Publish{VMID: "vmb", HostPort: 18091, Guest: netip.MustParseAddrPort("10.200.8.2:80")}); err != nil {
		t.Fatalf("another port: %v", err)
	}
}

// TestPublishRefusesAListeningPort: a host port a service listens on is
// not taken over by a VM's DNAT rule.
func TestPublishRefusesAListeningPort(t *testing.T) {
	needRoot(t)
	ns := netnstest.New(t)
	host := newHost(t, ns)
	ctx := context.Background()
	n := hostNet("bghost0", "10.200.7.0/24")
	serve(t, ns, "127.0.0.1:18095", "host service")
	err := host.Publish(ctx, n, privops.Publish{VMID: "vm1", HostPort: 18095, Guest: netip.MustParseAddrPort("10.200.7.2:80")})
	wantErr(t, "Publish over a listening port", err, "host port 18095 is in use by a service on this host")
	if got, err := ask(ns, "127.0.0.1:18095"); err != nil || !strings.HasPrefix(got, "host service") {
		t.Fatalf("the service after the refused Publish: %q, %v", got, err)
	}
	if err := host.TeardownNetwork(ctx, n); err != nil {
		t.Fatal(err)
	}
}
