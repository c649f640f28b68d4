package netnstest

import (
	"os"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// The namespace is new (not the test's own), its lo is up, and the test's
// thread is still in the namespace it started in.
func TestNew(t *testing.T) {
	before, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer before.Close()
	ns := New(t)
	if ns.Equal(before) {
		t.Fatal("New returned the test's own network namespace")
	}
	after, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer after.Close()
	if !after.Equal(before) {
		t.Error("the calling thread was left in another network namespace")
	}
	h := Handle(t, ns)
	lo, err := h.LinkByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	if lo.Attrs().Flags&1 == 0 { // net.FlagUp
		t.Error("lo is down in the new namespace")
	}
	links, err := h.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	if len(links) != 1 {
		t.Errorf("new namespace has %d links, want only lo", len(links))
	}
	// A link made there is not seen here.
	name := "nnt0dummy"
	if err := h.LinkAdd(&netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Name: name}}); err == nil {
		if _, err := netlink.LinkByName(name); err == nil {
			t.Errorf("link %s made in the test namespace shows up on the host", name)
		}
	}
	if _, err := os.Stat(Path(ns)); err != nil {
		t.Errorf("Path(ns) = %s does not open: %v", Path(ns), err)
	}
}
