package privhelper

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// These tests work inside network namespaces they create, so the host's
// own network is never touched.

func needNetRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to create network namespaces, bridges and taps")
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
	e, err := NewSystemExecutor(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

func TestSystemExecutorBridgeAndTap(t *testing.T) {
	needNetRoot(t)
	ns, path := testNS(t)
	h := nsHandle(t, ns)
	e := newExec(t, SystemConfig{NetNS: path})
	ctx := context.Background()

	for i := 0; i < 2; i++ { // the second call must change nothing and succeed
		if err := e.EnsureBridge(ctx, "banger9", "10.200.3.0/24"); err != nil {
			t.Fatalf("EnsureBridge #%d: %v", i+1, err)
		}
	}
	br, err := h.LinkByName("banger9")
	if err != nil {
		t.Fatal(err)
	}
	if br.Type() != "bridge" || br.Attrs().Flags&net.FlagUp == 0 {
		t.Fatalf("banger9 is a %s with flags %v, want an up bridge", br.Type(), br.Attrs().Flags)
	}
	addrs, err := h.AddrList(br, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	if len(addrs) != 1 || addrs[0].IPNet.String() != "10.200.3.1/24" {
		t.Fatalf("bridge addresses %v, want exactly 10.200.3.1/24", addrs)
	}

	const owner = 65534
	for i := 0; i < 2; i++ {
		if err := e.CreateTap(ctx, "bgtaptest", "banger9", owner); err != nil {
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
	wantGID := uint32(nogroup)
	if u, err := user.LookupId(strconv.Itoa(owner)); err == nil {
		g, _ := strconv.Atoi(u.Gid)
		wantGID = uint32(g)
	}
	if tap.Owner != owner || tap.Group != wantGID {
		t.Errorf("tap owner %d:%d, want %d:%d", tap.Owner, tap.Group, owner, wantGID)
	}
	if tap.Attrs().MasterIndex != br.Attrs().Index {
		t.Errorf("tap master index %d, want the bridge's %d", tap.Attrs().MasterIndex, br.Attrs().Index)
	}
	if tap.Attrs().Flags&net.FlagUp == 0 {
		t.Error("tap is not up")
	}
	// Another user cannot take the tap over.
	err = e.CreateTap(ctx, "bgtaptest", "banger9", 1234)
	if err == nil || !strings.Contains(err.Error(), "belongs to uid 65534") {
		t.Errorf("CreateTap of another user's tap: %v, want a refusal naming the owner", err)
	}

	if err := e.EnableIPForward(ctx); err != nil {
		t.Fatal(err)
	}
	var fwd []byte
	if err := inNS(ns, func() (err error) {
		fwd, err = os.ReadFile("/proc/sys/net/ipv4/ip_forward")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(string(fwd)) != "1" {
		t.Errorf("ip_forward in the namespace is %q, want 1", fwd)
	}

	if err := e.DeleteTap(ctx, "bgtaptest"); err != nil {
		t.Fatal(err)
	}
	if _, err := h.LinkByName("bgtaptest"); err == nil {
		t.Error("tap still exists after DeleteTap")
	}
	if err := e.DeleteTap(ctx, "bgtaptest"); err != nil {
		t.Errorf("DeleteTap of a missing tap: %v", err)
	}

	// Teardown takes the bridge and banger's taps still on it.
	if err := e.CreateTap(ctx, "bgtapleft", "banger9", owner); err != nil {
		t.Fatal(err)
	}
	if err := e.TeardownBridge(ctx, "banger9"); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"banger9", "bgtapleft"} {
		if _, err := h.LinkByName(n); err == nil {
			t.Errorf("%s still exists after TeardownBridge", n)
		}
	}
	if err := e.TeardownBridge(ctx, "banger9"); err != nil {
		t.Errorf("TeardownBridge of a missing bridge: %v", err)
	}
}

func TestSystemExecutorRefusesWhatIsNotItsKind(t *testing.T) {
	needNetRoot(t)
	ns, path := testNS(t)
	h := nsHandle(t, ns)
	e := newExec(t, SystemConfig{NetNS: path})
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
	if err := e.EnsureBridge(ctx, "banger8", "10.200.4.0/24"); err == nil || !strings.Contains(err.Error(), "not a bridge") {
		t.Errorf("EnsureBridge over a tap: %v", err)
	}
	if err := e.TeardownBridge(ctx, "banger8"); err == nil {
		t.Error("TeardownBridge deleted a tap")
	}
	if err := e.DeleteTap(ctx, "bgtapbr"); err == nil {
		t.Error("DeleteTap deleted a bridge")
	}
	for _, n := range []string{"banger8", "bgtapbr"} {
		if _, err := h.LinkByName(n); err != nil {
			t.Errorf("%s is gone: %v", n, err)
		}
	}
	if err := e.CreateTap(ctx, "bgtapx", "banger8", 65534); err == nil {
		t.Error("CreateTap put a tap on a non-bridge")
	}
	if err := e.EnsureBridge(ctx, "banger7", "10.200.4.1/24"); err == nil {
		t.Error("EnsureBridge accepted a subnet with host bits")
	}
}

func TestSystemExecutorLoop(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to bind loop devices")
	}
	if _, err := os.Stat("/dev/loop-control"); err != nil {
		t.Skipf("no /dev/loop-control (loop module not loaded?): %v", err)
	}
	dir := t.TempDir()
	img := filepath.Join(dir, "rootfs.ext4")
	if err := os.WriteFile(img, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	allowed := true
	e := newExec(t, SystemConfig{LockDir: t.TempDir(), LoopDetachable: func(b string) bool { return allowed && b == img }})
	ctx := context.Background()
	dev, err := e.LoopAttach(ctx, img, true)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { allowed = true; _ = e.LoopDetach(ctx, dev) })
	n := strings.TrimPrefix(dev, "/dev/loop")
	backing := func() string {
		b, _ := os.ReadFile("/sys/block/loop" + n + "/loop/backing_file")
		return strings.TrimSpace(string(b))
	}
	if got := backing(); got != img {
		t.Fatalf("%s is bound to %q, want %s", dev, got, img)
	}
	if ro, _ := os.ReadFile("/sys/block/loop" + n + "/ro"); strings.TrimSpace(string(ro)) != "1" {
		t.Errorf("%s is not read-only", dev)
	}

	allowed = false
	if err := e.LoopDetach(ctx, dev); err == nil || !strings.Contains(err.Error(), "not detaching") {
		t.Errorf("LoopDetach of a refused backing file: %v", err)
	}
	if got := backing(); got != img {
		t.Fatalf("a refused LoopDetach unbound %s", dev)
	}
	allowed = true
	if err := e.LoopDetach(ctx, dev); err != nil {
		t.Fatal(err)
	}
	if got := backing(); got == img {
		t.Errorf("%s is still bound to %s after LoopDetach", dev, img)
	}
	if err := e.LoopDetach(ctx, dev); err != nil {
		t.Errorf("LoopDetach of an unbound device: %v", err)
	}
}

func TestStateDirsDetachable(t *testing.T) {
	base := t.TempDir()
	real := filepath.Join(base, "real")
	if err := os.MkdirAll(filepath.Join(real, "images"), 0o755); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(base, "link")
	if err := os.Symlink(real, link); err != nil {
		t.Fatal(err)
	}
	p := DefaultPolicy(1000)
	p.StateDir = func(uid uint32) (string, error) {
		if uid == 1000 {
			return link, nil
		}
		return "", fmt.Errorf("no user %d", uid)
	}
	ok := stateDirsDetachable(p, map[uint32]bool{1000: true, 1001: true})
	for path, want := range map[string]bool{
		filepath.Join(real, "images", "a.ext4"): true,
		real:                                    false,
		filepath.Join(base, "realx", "a"):       false,
		filepath.Join(base, "other.ext4"):       false,
		"/etc/passwd":                           false,
	} {
		if got := ok(path); got != want {
			t.Errorf("detachable(%s) = %v, want %v", path, got, want)
		}
	}
}
