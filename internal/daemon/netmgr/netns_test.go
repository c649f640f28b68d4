package netmgr

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"banger/internal/testutil"
	"banger/internal/testutil/netnstest"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// These tests build everything inside network namespaces they create, so
// the host's own network is never touched.

// needRoot skips unless the test may build bridges, taps and nftables
// rules in a namespace of its own.
func needRoot(t *testing.T) {
	t.Helper()
	testutil.NeedRoot(t, "create network namespaces, bridges, taps and nftables rules")
	testutil.NeedPath(t, "/dev/net/tun", "to create taps")
}

func newManager(t *testing.T, ns netns.NsHandle, l Leases, opts ...Option) *Manager {
	t.Helper()
	dir := t.TempDir()
	rc := dir + "/resolv.conf"
	os.WriteFile(rc, []byte("nameserver 192.0.2.53\n"), 0o644)
	m, err := New(Config{Bridge: "bgtest0", Subnet: netip.MustParsePrefix("10.200.0.0/24"), ResolvConf: rc}, l, append([]Option{WithNetNS(ns), WithSysctlDir(dir)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// snapshot describes the links, addresses, nftables state and ip_forward
// of ns; withHandles includes rule handles, which change when a rule is
// re-added.
func snapshot(t *testing.T, ns netns.NsHandle, withHandles bool) string {
	t.Helper()
	h := netnstest.Handle(t, ns)
	var b strings.Builder
	links, err := h.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	sort.Slice(links, func(i, j int) bool { return links[i].Attrs().Name < links[j].Attrs().Name })
	for _, l := range links {
		a := l.Attrs()
		fmt.Fprintf(&b, "link %s %s up=%v master=%d\n", a.Name, l.Type(), a.Flags&net.FlagUp != 0, a.MasterIndex)
		addrs, _ := h.AddrList(l, netlink.FAMILY_ALL)
		for _, ad := range addrs {
			if ad.IP.IsLinkLocalUnicast() {
				continue // IPv6 autoconfiguration comes and goes on its own
			}
			fmt.Fprintf(&b, "  addr %s\n", ad.IPNet)
		}
	}
	c, err := nftables.New(nftables.WithNetNSFd(int(ns)))
	if err != nil {
		t.Fatal(err)
	}
	tables, err := c.ListTables()
	if err != nil {
		t.Fatal(err)
	}
	for _, tb := range tables {
		fmt.Fprintf(&b, "table %d %s\n", tb.Family, tb.Name)
	}
	chains, _ := c.ListChains()
	sort.Slice(chains, func(i, j int) bool { return chains[i].Name < chains[j].Name })
	for _, ch := range chains {
		policy := "none"
		if ch.Policy != nil {
			policy = fmt.Sprint(*ch.Policy)
		}
		fmt.Fprintf(&b, "chain %s/%s %s hook=%v prio=%v policy=%s\n", ch.Table.Name, ch.Name, ch.Type, *ch.Hooknum, *ch.Priority, policy)
		rules, err := c.GetRules(ch.Table, ch)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rules {
			if withHandles {
				fmt.Fprintf(&b, "  rule %d", r.Handle)
			}
			fmt.Fprintf(&b, "  %q", comment(r))
			for _, e := range r.Exprs {
				fmt.Fprintf(&b, " %T%+v", e, e)
			}
			b.WriteString("\n")
		}
	}
	runIn(ns, func() error {
		v, _ := os.ReadFile("/proc/sys/net/ipv4/ip_forward")
		fmt.Fprintf(&b, "ip_forward=%s", v)
		return nil
	})
	return b.String()
}

func TestEnsureIdempotentAndRepairs(t *testing.T) {
	needRoot(t)
	ns := netnstest.New(t)
	m := newManager(t, ns, NewMemLeases())
	ctx := context.Background()
	before := snapshot(t, ns, true)
	if err := m.Ensure(ctx); err != nil {
		t.Fatal(err)
	}
	s1 := snapshot(t, ns, true)
	s1NoHandles := snapshot(t, ns, false)
	if s1 == before {
		t.Fatal("Ensure changed nothing")
	}
	for _, want := range []string{
		"link bgtest0 bridge up=true", "addr 10.200.0.1/24",
		"chain banger-bgtest0/postrouting nat", "chain banger-bgtest0/forward filter", "chain banger-bgtest0/prerouting nat", "chain banger-bgtest0/output nat",
		"masquerade 10.200.0.0/24 out of all but bgtest0", "ip_forward=1",
	} {
		if !strings.Contains(s1, want) {
			t.Errorf("after Ensure, no %q in\n%s", want, s1)
		}
	}
	if err := m.Ensure(ctx); err != nil {
		t.Fatal(err)
	}
	if s2 := snapshot(t, ns, true); s2 != s1 {
		t.Fatalf("second Ensure changed state:\n--- first\n%s\n--- second\n%s", s1, s2)
	}

	// Damage it: bridge down, gateway address gone, masquerade rule gone.
	h := netnstest.Handle(t, ns)
	br, _ := h.LinkByName("bgtest0")
	h.LinkSetDown(br)
	addrs, _ := h.AddrList(br, netlink.FAMILY_V4)
	for _, a := range addrs {
		h.AddrDel(br, &a)
	}
	c, _ := nftables.New(nftables.WithNetNSFd(int(ns)))
	ch := &nftables.Chain{Name: chainPostrouting, Table: table(m.Spec())}
	rules, _ := c.GetRules(ch.Table, ch)
	c.DelRule(rules[0])
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	if snapshot(t, ns, false) == s1NoHandles {
		t.Fatal("damage did not take")
	}
	if err := m.Ensure(ctx); err != nil {
		t.Fatal(err)
	}
	if got := snapshot(t, ns, false); got != s1NoHandles {
		t.Fatalf("Ensure did not repair:\n--- want\n%s\n--- got\n%s", s1NoHandles, got)
	}
}

func TestAttachFiftyConcurrentlyThenTeardown(t *testing.T) {
	needRoot(t)
	ns := netnstest.New(t)
	leases := NewMemLeases()
	m := newManager(t, ns, leases, WithTapOwner(1234, 4321))
	ctx := context.Background()
	before := snapshot(t, ns, false)

	const n = 50
	atts := make([]Attachment, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			atts[i], errs[i] = m.Attach(ctx, fmt.Sprintf("vm%02dabcdefgh", i))
		}()
	}
	wg.Wait()
	sub := netip.MustParsePrefix("10.200.0.0/24")
	seenIP := map[netip.Addr]bool{}
	seenTap := map[string]bool{}
	seenMAC := map[string]bool{}
	for i, a := range atts {
		if errs[i] != nil {
			t.Fatalf("Attach %d: %v", i, errs[i])
		}
		ip := a.IP.Addr()
		if !sub.Contains(ip) || ip == sub.Addr() || ip == netip.MustParseAddr("10.200.0.1") || ip == netip.MustParseAddr("10.200.0.255") || a.IP.Bits() != 24 {
			t.Errorf("VM %d got %v", i, a.IP)
		}
		if seenIP[ip] || seenTap[a.Tap] || seenMAC[a.MAC.String()] {
			t.Errorf("VM %d: duplicate %v / %s / %s", i, ip, a.Tap, a.MAC)
		}
		seenIP[ip], seenTap[a.Tap], seenMAC[a.MAC.String()] = true, true, true
		if a.Gateway != netip.MustParseAddr("10.200.0.1") || len(a.DNS) != 1 || a.DNS[0] != netip.MustParseAddr("192.0.2.53") {
			t.Errorf("VM %d: gateway %v dns %v", i, a.Gateway, a.DNS)
		}
		if len(a.Tap) > 15 || a.MAC[0] != 0x02 {
			t.Errorf("VM %d: tap %q mac %v", i, a.Tap, a.MAC)
		}
	}
	h := netnstest.Handle(t, ns)
	br, err := h.LinkByName("bgtest0")
	if err != nil {
		t.Fatal(err)
	}
	links, _ := h.LinkList()
	onBridge := 0
	for _, l := range links {
		if l.Attrs().MasterIndex != br.Attrs().Index {
			continue
		}
		onBridge++
		tt, ok := l.(*netlink.Tuntap)
		if !ok || tt.Mode != netlink.TUNTAP_MODE_TAP || !seenTap[l.Attrs().Name] || l.Attrs().Flags&net.FlagUp == 0 {
			t.Errorf("unexpected port %s (%s)", l.Attrs().Name, l.Type())
			continue
		}
		if tt.Owner != 1234 || tt.Group != 4321 {
			t.Errorf("tap %s owner %d group %d, want 1234/4321", l.Attrs().Name, tt.Owner, tt.Group)
		}
	}
	if onBridge != n {
		t.Fatalf("%d ports on the bridge, want %d", onBridge, n)
	}

	// Re-attaching gives the same attachment.
	again, err := m.Attach(ctx, "vm07abcdefgh")
	if err != nil || again.IP != atts[7].IP || again.Tap != atts[7].Tap {
		t.Fatalf("re-attach = %+v, %v; want %+v", again, err, atts[7])
	}
	// With leases left, teardown leaves everything.
	if err := m.TeardownIfUnused(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := h.LinkByName("bgtest0"); err != nil {
		t.Fatal("teardown with VMs attached removed the bridge")
	}

	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = m.Detach(ctx, fmt.Sprintf("vm%02dabcdefgh", i))
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if l, _ := leases.List(ctx); len(l) != 0 {
		t.Fatalf("leases left: %v", l)
	}
	if err := m.Detach(ctx, "vm00abcdefgh"); err != nil {
		t.Fatalf("second Detach: %v", err)
	}
	if err := m.TeardownIfUnused(ctx); err != nil {
		t.Fatal(err)
	}
	after := snapshot(t, ns, false)
	// Everything is as before, ip_forward back at 0 included.
	if after != before {
		t.Fatalf("teardown left state behind:\n--- before\n%s\n--- after\n%s", before, after)
	}
	if err := m.TeardownIfUnused(ctx); err != nil {
		t.Fatalf("second teardown: %v", err)
	}
}

func TestAttachBadInputChangesNothing(t *testing.T) {
	needRoot(t)
	ns := netnstest.New(t)
	leases := NewMemLeases()
	m := newManager(t, ns, leases)
	before := snapshot(t, ns, true)
	for _, id := range []string{"", "has space", strings.Repeat("x", 200)} {
		if _, err := m.Attach(context.Background(), id); err == nil {
			t.Errorf("Attach(%q) accepted", id)
		}
	}
	if snapshot(t, ns, true) != before {
		t.Fatal("a refused Attach changed state")
	}
	if l, _ := leases.List(context.Background()); len(l) != 0 {
		t.Fatalf("leases: %v", l)
	}
}

// runInNS runs fn inside ns, failing the test on error.
func runInNS(t *testing.T, ns netns.NsHandle, fn func() error) {
	t.Helper()
	if err := runIn(ns, fn); err != nil {
		t.Fatal(err)
	}
}

func mustPrefix(s string) *netlink.Addr {
	a, err := netlink.ParseAddr(s)
	if err != nil {
		panic(err)
	}
	return a
}

// veth makes a veth pair with one end (here) in the namespace of h and the
// other (there) in peerNS, both up.
func veth(t *testing.T, h *netlink.Handle, here string, peerNS netns.NsHandle, there string) (netlink.Link, netlink.Link) {
	t.Helper()
	if err := h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: here}, PeerName: there, PeerNamespace: netlink.NsFd(int(peerNS))}); err != nil {
		t.Fatalf("veth %s/%s: %v", here, there, err)
	}
	a, err := h.LinkByName(here)
	if err != nil {
		t.Fatal(err)
	}
	hp := netnstest.Handle(t, peerNS)
	b, err := hp.LinkByName(there)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.LinkSetUp(a); err != nil {
		t.Fatal(err)
	}
	if err := hp.LinkSetUp(b); err != nil {
		t.Fatal(err)
	}
	return a, b
}

// plugVM stands a namespace in for a VM: a veth from the bridge bgtest0
// (in place of the tap) into vm, with the attachment's address on its end,
// which it returns.
func plugVM(t *testing.T, hh, hv *netlink.Handle, vm netns.NsHandle, att Attachment) netlink.Link {
	t.Helper()
	vmh, vmg := veth(t, hh, "vmh", vm, "vmg")
	br, err := hh.LinkByName("bgtest0")
	if err != nil {
		t.Fatal(err)
	}
	if err := hh.LinkSetMaster(vmh, br); err != nil {
		t.Fatal(err)
	}
	if err := hv.AddrAdd(vmg, mustPrefix(att.IP.String())); err != nil {
		t.Fatal(err)
	}
	return vmg
}

// serve listens on addr inside ns and answers each connection with reply
// and the peer's IP, until the test ends.
func serve(t *testing.T, ns netns.NsHandle, addr, reply string) {
	t.Helper()
	var ln net.Listener
	runInNS(t, ns, func() (err error) {
		ln, err = net.Listen("tcp4", addr)
		return err
	})
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			host, _, _ := net.SplitHostPort(c.RemoteAddr().String())
			fmt.Fprintf(c, "%s from %s", reply, host)
			c.Close()
		}
	}()
}

// ask connects to addr from inside ns and returns what the server says.
// The deadline only bounds a broken setup; nothing is timed.
func ask(ns netns.NsHandle, addr string) (string, error) {
	var out string
	err := runIn(ns, func() error {
		d := net.Dialer{Timeout: 10 * time.Second}
		c, err := d.Dial("tcp4", addr)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		b, err := io.ReadAll(c)
		out = string(b)
		return err
	})
	return out, err
}

// TestNATAndPublish builds three namespaces: "host" (the Manager's),
// "outside" behind a veth with a server on 198.51.100.2, and "vm" plugged
// into the bridge by a veth (standing in for a tap) with the leased address.
func TestNATAndPublish(t *testing.T) {
	needRoot(t)
	host, outside, vm := netnstest.New(t), netnstest.New(t), netnstest.New(t)
	ctx := context.Background()
	m := newManager(t, host, NewMemLeases())
	hh, ho, hv := netnstest.Handle(t, host), netnstest.Handle(t, outside), netnstest.Handle(t, vm)

	out0, out1 := veth(t, hh, "out0", outside, "out1")
	if err := hh.AddrAdd(out0, mustPrefix("198.51.100.1/24")); err != nil {
		t.Fatal(err)
	}
	if err := ho.AddrAdd(out1, mustPrefix("198.51.100.2/24")); err != nil {
		t.Fatal(err)
	}
	if err := hh.RouteAdd(&netlink.Route{Gw: net.ParseIP("198.51.100.2"), LinkIndex: out0.Attrs().Index}); err != nil {
		t.Fatal(err)
	}

	att, err := m.Attach(ctx, "vm1")
	if err != nil {
		t.Fatal(err)
	}
	vmg := plugVM(t, hh, hv, vm, att)
	if err := hv.RouteAdd(&netlink.Route{Gw: att.Gateway.AsSlice(), LinkIndex: vmg.Attrs().Index}); err != nil {
		t.Fatal(err)
	}

	// Outbound: the outside server sees the host's outer address, since it
	// has no route back to 10.200.0.0/24.
	serve(t, outside, "198.51.100.2:7000", "outside")
	got, err := ask(vm, "198.51.100.2:7000")
	if err != nil {
		t.Fatalf("VM cannot reach the outside: %v", err)
	}
	if got != "outside from 198.51.100.1" {
		t.Fatalf("outside server says %q, want the NATed source 198.51.100.1", got)
	}

	// Published port: host clients (outer address and loopback) and outside
	// clients reach the VM's server.
	guest := att.IP.Addr()
	serve(t, vm, netip.AddrPortFrom(guest, 8080).String(), "vm")
	if err := m.Publish(ctx, "vm1", 18080, guest, 8080); err != nil {
		t.Fatal(err)
	}
	s1 := snapshot(t, host, true)
	if err := m.Publish(ctx, "vm1", 18080, guest, 8080); err != nil {
		t.Fatal(err)
	}
	if s2 := snapshot(t, host, true); s2 != s1 {
		t.Fatalf("second Publish changed state:\n%s\n---\n%s", s1, s2)
	}
	if err := m.Publish(ctx, "vm2", 18080, guest, 8080); err == nil {
		t.Fatal("publishing a taken host port for another VM succeeded")
	}
	for _, c := range []struct {
		from netns.NsHandle
		name string
		addr string
	}{
		{host, "host via its outer address", "198.51.100.1:18080"},
		{host, "host via loopback", "127.0.0.1:18080"},
		{host, "host via the gateway", "10.200.0.1:18080"},
		{outside, "outside", "198.51.100.1:18080"},
	} {
		got, err := ask(c.from, c.addr)
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		if !strings.HasPrefix(got, "vm from ") {
			t.Errorf("%s: got %q", c.name, got)
		}
	}
	// route_localnet is on for the bridge now; a guest must still not
	// reach the host's loopback services. Make the "vm" namespace send
	// 127.0.0.0/8 to the gateway, as a hostile guest could, and send one
	// datagram to the host's 127.0.0.1 and then one to the gateway: the
	// host's socket, bound to both, must see the second first. (Replies
	// from 127.0.0.1 cannot leave by the bridge, so only one-way UDP is a
	// risk.)
	var pc net.PacketConn
	runInNS(t, host, func() (err error) {
		pc, err = net.ListenPacket("udp4", "0.0.0.0:9999")
		return err
	})
	defer pc.Close()
	runInNS(t, vm, func() error {
		for _, k := range []string{"all", "vmg"} {
			if _, err := setSysctl("net/ipv4/conf/"+k+"/route_localnet", "1"); err != nil {
				return err
			}
		}
		return nil
	})
	lo, _ := hv.LinkByName("lo")
	if err := hv.AddrDel(lo, mustPrefix("127.0.0.1/8")); err != nil {
		t.Fatal(err)
	}
	if err := hv.RouteAdd(&netlink.Route{Dst: mustPrefix("127.0.0.0/8").IPNet, Gw: att.Gateway.AsSlice(), LinkIndex: vmg.Attrs().Index}); err != nil {
		t.Fatal(err)
	}
	runInNS(t, vm, func() error {
		for _, dst := range []string{"127.0.0.1:9999", "10.200.0.1:9999"} {
			d := net.Dialer{LocalAddr: &net.UDPAddr{IP: guest.AsSlice()}}
			c, err := d.Dial("udp4", dst)
			if err != nil {
				return err
			}
			_, err = c.Write([]byte(dst))
			c.Close()
			if err != nil {
				return err
			}
		}
		return nil
	})
	pc.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 64)
	n, _, err := pc.ReadFrom(buf)
	if err != nil {
		t.Fatalf("no datagram from the guest: %v", err)
	}
	if got := string(buf[:n]); got != "10.200.0.1:9999" {
		t.Fatalf("the host received %q first: a guest reached its loopback", got)
	}

	if p, err := m.owned.Published(ctx, m.Spec()); err != nil || p[18080] != "vm1" || len(p) != 1 {
		t.Fatalf("Published = %v, %v", p, err)
	}

	if err := m.Unpublish(ctx, "vm1", 18080); err != nil {
		t.Fatal(err)
	}
	if _, err := ask(host, "198.51.100.1:18080"); err == nil {
		t.Fatal("port still published after Unpublish")
	}
	if err := m.Unpublish(ctx, "vm1", 18080); err != nil {
		t.Fatalf("second Unpublish: %v", err)
	}

	// Detach removes the VM's published ports with its tap.
	if err := m.Publish(ctx, "vm1", 18081, guest, 8080); err != nil {
		t.Fatal(err)
	}
	if err := m.Detach(ctx, "vm1"); err != nil {
		t.Fatal(err)
	}
	if p, _ := m.owned.Published(ctx, m.Spec()); len(p) != 0 {
		t.Fatalf("Detach left published ports: %v", p)
	}
	if vmh, err := hh.LinkByName("vmh"); err == nil {
		hh.LinkDel(vmh)
	}
	if err := m.TeardownIfUnused(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := hh.LinkByName("bgtest0"); err == nil {
		t.Fatal("bridge left after teardown")
	}
}

// TestDNSRedirect: with Config.DNSPort set (a user's bangerd, which cannot
// bind port 53), a guest's connection to the gateway's port 53 reaches the
// responder on the gateway's DNSPort.
func TestDNSRedirect(t *testing.T) {
	needRoot(t)
	host, vm := netnstest.New(t), netnstest.New(t)
	ctx := context.Background()
	l := NewMemLeases()
	m, err := New(Config{Bridge: "bgtest0", DNSPort: 10053}, l, WithNetNS(host))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	hh, hv := netnstest.Handle(t, host), netnstest.Handle(t, vm)
	att, err := m.Attach(ctx, "vm1")
	if err != nil {
		t.Fatal(err)
	}
	plugVM(t, hh, hv, vm, att)
	gw := att.Gateway.String()
	serve(t, host, gw+":10053", "dns")
	got, err := ask(vm, gw+":53")
	if err != nil || !strings.HasPrefix(got, "dns from "+att.IP.Addr().String()) {
		t.Fatalf("guest -> %s:53 = %q, %v; want the responder on port 10053", gw, got, err)
	}
	if err := m.Detach(ctx, "vm1"); err != nil {
		t.Fatal(err)
	}
	if err := m.TeardownIfUnused(ctx); err != nil {
		t.Fatal(err)
	}
}
