package netnstest

import (
	"fmt"
	"os"
	"runtime"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"banger/internal/testutil"
)

// New makes a fresh network namespace for the test and returns a handle to
// it, closed when the test ends. Its loopback is up and its ip_forward is 0,
// whatever the host's is (a new namespace may inherit it). The namespace is
// made on a locked thread that returns to its own namespace afterwards (or,
// if it cannot, is never unlocked, so the runtime drops it): no goroutine of
// the test ever runs inside it by accident.
func New(t testing.TB) netns.NsHandle {
	t.Helper()
	testutil.NeedRoot(t, "create a network namespace")
	type result struct {
		ns  netns.NsHandle
		err error
	}
	c := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			c <- result{-1, fmt.Errorf("open this thread's network namespace: %w", err)}
			return
		}
		defer orig.Close()
		ns, err := netns.New()
		if err != nil {
			runtime.UnlockOSThread()
			c <- result{-1, err}
			return
		}
		// /proc/sys/net is the namespace of the thread that opens it.
		werr := os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("0\n"), 0o644)
		if err := netns.Set(orig); err != nil {
			c <- result{ns, fmt.Errorf("return to the original network namespace: %w", err)} // the thread stays locked and dies
			return
		}
		runtime.UnlockOSThread()
		if werr != nil {
			werr = fmt.Errorf("set ip_forward to 0 in the new namespace: %w", werr)
		}
		c <- result{ns, werr}
	}()
	r := <-c
	if r.ns >= 0 {
		t.Cleanup(func() { r.ns.Close() })
	}
	if r.err != nil {
		if r.ns < 0 {
			t.Skipf("cannot create a network namespace here: %v", r.err)
		}
		t.Fatal(r.err)
	}
	h := Handle(t, r.ns)
	lo, err := h.LinkByName("lo")
	if err != nil {
		t.Fatalf("find lo in the new namespace: %v", err)
	}
	if err := h.LinkSetUp(lo); err != nil {
		t.Fatalf("bring lo up in the new namespace: %v", err)
	}
	return r.ns
}

// Handle returns a netlink handle into ns, closed when the test ends.
func Handle(t testing.TB, ns netns.NsHandle) *netlink.Handle {
	t.Helper()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatalf("netlink handle into network namespace %v: %v", ns, err)
	}
	t.Cleanup(h.Close)
	return h
}

// Path returns a path that opens ns for as long as its handle is open
// (/proc/PID/fd/N), for programs that take a namespace by path.
func Path(ns netns.NsHandle) string {
	return fmt.Sprintf("/proc/%d/fd/%d", os.Getpid(), int(ns))
}
