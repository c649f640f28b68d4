package netmgr

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"testing"
)

func TestPickFree(t *testing.T) {
	sub := netip.MustParsePrefix("10.200.0.0/30") // .1 gateway, .2 the only VM address
	a, err := PickFree(sub, nil)
	if err != nil || a != netip.MustParseAddr("10.200.0.2") {
		t.Fatalf("PickFree = %v, %v", a, err)
	}
	if _, err := PickFree(sub, []netip.Addr{a}); err == nil {
		t.Fatal("full subnet gave an address")
	}
	if _, err := PickFree(netip.MustParsePrefix("10.0.0.0/31"), nil); err == nil {
		t.Fatal("/31 accepted")
	}
	used := []netip.Addr{netip.MustParseAddr("10.9.0.2"), netip.MustParseAddr("10.9.0.3")}
	if a, _ := PickFree(netip.MustParsePrefix("10.9.0.0/24"), used); a != netip.MustParseAddr("10.9.0.4") {
		t.Fatalf("PickFree skipped to %v", a)
	}
	if b := lastAddr(netip.MustParsePrefix("10.9.0.0/22")); b != netip.MustParseAddr("10.9.3.255") {
		t.Fatalf("lastAddr = %v", b)
	}
}

func TestMemLeasesConcurrentDistinct(t *testing.T) {
	l := NewMemLeases()
	sub := netip.MustParsePrefix("10.200.0.0/24")
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make(chan error, 253)
	for i := range 253 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := l.Acquire(ctx, fmt.Sprintf("vm%d", i), func(u []netip.Addr) (netip.Addr, error) { return PickFree(sub, u) })
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	m, _ := l.List(ctx)
	seen := map[netip.Addr]bool{}
	for _, a := range m {
		if seen[a] {
			t.Fatalf("%v leased twice", a)
		}
		seen[a] = true
	}
	if len(seen) != 253 {
		t.Fatalf("%d leases", len(seen))
	}
	if _, err := l.Acquire(ctx, "one-too-many", func(u []netip.Addr) (netip.Addr, error) { return PickFree(sub, u) }); err == nil {
		t.Fatal("254th lease in a /24")
	}
	// Re-acquiring returns the same address without picking.
	a1 := m["vm7"]
	a2, err := l.Acquire(ctx, "vm7", func([]netip.Addr) (netip.Addr, error) { t.Fatal("pick called"); return netip.Addr{}, nil })
	if err != nil || a1 != a2 {
		t.Fatalf("re-acquire = %v, %v; want %v", a2, err, a1)
	}
}

func TestNamesAndMAC(t *testing.T) {
	m, err := New(Config{}, NewMemLeases())
	if err != nil {
		t.Skipf("cannot open netlink here: %v", err)
	}
	defer m.Close()
	if n := m.TapName("0123456789abcdef"); n != "bgtap0123456789" {
		t.Errorf("TapName = %q", n)
	}
	if n := m.TapName("VM With Spaces"); len(n) != 15 || n[:5] != "bgtap" {
		t.Errorf("TapName of odd id = %q", n)
	}
	mac := MACFor("abc")
	if mac[0] != 0x02 || len(mac) != 6 || MACFor("abc").String() != mac.String() || MACFor("abd").String() == mac.String() {
		t.Errorf("MACFor = %v", mac)
	}
	for _, bad := range []Config{
		{Bridge: "much-too-long-bridge"},
		{Subnet: netip.MustParsePrefix("10.0.0.1/24")},
		{Subnet: netip.MustParsePrefix("fd00::/64")},
		{Subnet: netip.MustParsePrefix("10.0.0.0/31")},
		{TapPrefix: "toolongprefix"},
		{Bridge: "bgtap0"},
	} {
		if m, err := New(bad, NewMemLeases()); err == nil {
			m.Close()
			t.Errorf("New(%+v) accepted", bad)
		}
	}
}
