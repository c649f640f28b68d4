package boot

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"banger/internal/testutil/netnstest"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// addLink adds an Ethernet-like link called name: a dummy, or a veth pair
// when the dummy driver is missing. The veth's peer is moved into a
// namespace of its own, so name is the only link besides lo.
func addLink(t *testing.T, h *netlink.Handle, name string) netlink.Link {
	t.Helper()
	if err := h.LinkAdd(&netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Name: name}}); err != nil {
		peerName := name + "p"
		if err := h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: peerName}); err != nil {
			t.Skipf("cannot create a dummy or veth link: %v", err)
		}
		peer, err := h.LinkByName(peerName)
		if err != nil {
			t.Fatal(err)
		}
		other := netnstest.New(t)
		if err := h.LinkSetNsFd(peer, int(other)); err != nil {
			t.Fatalf("move %s out of the way: %v", peerName, err)
		}
	}
	link, err := h.LinkByName(name)
	if err != nil {
		t.Fatal(err)
	}
	return link
}

// netState is everything the network duty may change, as text.
func netState(t *testing.T, h *netlink.Handle) string {
	t.Helper()
	links, err := h.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, l := range links {
		a := l.Attrs()
		lines = append(lines, fmt.Sprintf("link %s up=%v mtu=%d", a.Name, a.Flags&net.FlagUp != 0, a.MTU))
		addrs, err := h.AddrList(l, netlink.FAMILY_V4)
		if err != nil {
			t.Fatal(err)
		}
		for _, ad := range addrs {
			lines = append(lines, fmt.Sprintf("addr %s %s brd %v", a.Name, ad.IPNet, ad.Broadcast))
		}
	}
	routes, err := h.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range routes {
		lines = append(lines, fmt.Sprintf("route table=%d dst=%v gw=%v dev=%d flags=%d", r.Table, r.Dst, r.Gw, r.LinkIndex, r.Flags))
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

func defaultRoutes(t *testing.T, h *netlink.Handle) []netlink.Route {
	t.Helper()
	routes, err := h.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
	if err != nil {
		t.Fatal(err)
	}
	var out []netlink.Route
	for _, r := range routes {
		if isDefault(r) {
			out = append(out, r)
		}
	}
	return out
}

func TestApplyNetworkInNamespace(t *testing.T) {
	h := netnstest.Handle(t, netnstest.New(t))
	addLink(t, h, "eth0")
	env := testEnv(t)
	env.Netlink = h
	s := Settings{
		Iface:   "eth0",
		Addr:    netip.MustParsePrefix("10.77.0.2/24"),
		Gateway: netip.MustParseAddr("10.77.0.1"),
		MTU:     1400,
	}
	rep, err := Apply(context.Background(), s, env)
	if err != nil {
		t.Fatalf("Apply: %v\n%s", err, rep)
	}
	if st := stepOf(t, rep, DutyNetwork); st.Status != StatusDone {
		t.Fatalf("network step = %v", st)
	}
	link, err := h.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	if a := link.Attrs(); a.Flags&net.FlagUp == 0 || a.MTU != 1400 {
		t.Fatalf("eth0 up=%v mtu=%d, want up and 1400", a.Flags&net.FlagUp != 0, a.MTU)
	}
	lo, err := h.LinkByName("lo")
	if err != nil || lo.Attrs().Flags&net.FlagUp == 0 {
		t.Fatalf("lo is not up: %v", err)
	}
	addrs, err := h.AddrList(link, netlink.FAMILY_V4)
	if err != nil || len(addrs) != 1 || addrs[0].IPNet.String() != "10.77.0.2/24" {
		t.Fatalf("eth0 addresses = %v (%v), want 10.77.0.2/24", addrs, err)
	}
	if addrs[0].Broadcast.String() != "10.77.0.255" {
		t.Errorf("broadcast = %v, want 10.77.0.255", addrs[0].Broadcast)
	}
	defs := defaultRoutes(t, h)
	if len(defs) != 1 || defs[0].Gw.String() != "10.77.0.1" || defs[0].LinkIndex != link.Attrs().Index {
		t.Fatalf("default routes = %v, want one via 10.77.0.1 on eth0", defs)
	}

	before := netState(t, h)
	rep, err = Apply(context.Background(), s, env)
	if err != nil {
		t.Fatalf("second Apply: %v\n%s", err, rep)
	}
	if st := stepOf(t, rep, DutyNetwork); st.Status != StatusUnchanged {
		t.Fatalf("second apply: network step = %v, want unchanged", st)
	}
	if after := netState(t, h); after != before {
		t.Fatalf("second apply changed the network:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

func TestApplyNetworkDefaultsAndReplaces(t *testing.T) {
	h := netnstest.Handle(t, netnstest.New(t))
	link := addLink(t, h, "ens3")
	// Left over: the same IP with another prefix, an unrelated address,
	// and a default route through another gateway.
	if err := h.LinkSetUp(link); err != nil {
		t.Fatal(err)
	}
	for _, a := range []string{"10.88.0.2/16", "192.168.5.5/24"} {
		ip, ipnet, _ := net.ParseCIDR(a)
		ipnet.IP = ip
		if err := h.AddrAdd(link, &netlink.Addr{IPNet: ipnet}); err != nil {
			t.Fatal(err)
		}
	}
	if err := h.RouteAdd(&netlink.Route{LinkIndex: link.Attrs().Index, Gw: net.ParseIP("192.168.5.1"),
		Dst: &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}}); err != nil {
		t.Fatal(err)
	}
	env := testEnv(t)
	env.Netlink = h
	// No banger.iface: the first non-loopback link is used. The gateway
	// lies outside a /32, so it must be added on-link.
	s := Settings{Addr: netip.MustParsePrefix("10.88.0.2/32"), Gateway: netip.MustParseAddr("10.88.0.1")}
	rep, err := Apply(context.Background(), s, env)
	if err != nil {
		t.Fatalf("Apply: %v\n%s", err, rep)
	}
	addrs, err := h.AddrList(link, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, a := range addrs {
		got = append(got, a.IPNet.String())
	}
	sort.Strings(got)
	if strings.Join(got, " ") != "10.88.0.2/32 192.168.5.5/24" {
		t.Fatalf("addresses = %v, want the new /32 and the unrelated one\n%s", got, rep)
	}
	defs := defaultRoutes(t, h)
	if len(defs) != 1 || defs[0].Gw.String() != "10.88.0.1" {
		t.Fatalf("default routes = %v, want only one via 10.88.0.1", defs)
	}
	if defs[0].Flags&int(netlink.FLAG_ONLINK) == 0 {
		t.Errorf("default route via a gateway outside the subnet is not on-link: %v", defs[0])
	}
}

func TestApplyNetworkMissingInterfaceFailsAloneAndKeepsGoing(t *testing.T) {
	h := netnstest.Handle(t, netnstest.New(t))
	env := testEnv(t)
	env.Netlink = h
	env.LinkWait = 1 // give up at once
	s := Settings{Iface: "nope0", Addr: netip.MustParsePrefix("10.99.0.2/24"),
		DNS: []netip.Addr{netip.MustParseAddr("10.99.0.1")}}
	rep, err := Apply(context.Background(), s, env)
	if err == nil || !strings.Contains(err.Error(), "nope0") {
		t.Fatalf("err = %v, want one naming nope0", err)
	}
	if st := stepOf(t, rep, DutyNetwork); st.Status != StatusFailed {
		t.Fatalf("network step = %v, want failed", st)
	}
	if st := stepOf(t, rep, DutyDNS); st.Status != StatusDone {
		t.Fatalf("dns step = %v: a network failure stopped later duties", st)
	}
	if _, err := os.Stat(filepath.Join(env.EtcDir, "resolv.conf")); err != nil {
		t.Fatal(err)
	}
}
