package privhelper

import (
	"context"
	"fmt"
	"net/netip"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"banger/internal/daemon/dmsnap"
	"banger/internal/daemon/netmgr"
)

// SystemConfig configures a SystemExecutor.
type SystemConfig struct {
	// NetNS is the path of the network namespace to work in (tests use
	// one they made); "" is the helper's own.
	NetNS string
	// TapPrefix starts the names of the taps TeardownBridge removes from
	// the bridge with it; "" means "bgtap".
	TapPrefix string
	// LockDir is where the loop-device flock lives (see dmsnap); "" means
	// the process-wide lock alone.
	LockDir string
	// LoopDetachable says whether LoopDetach may unbind a loop device
	// bound to backing (as the kernel reports it). nil allows every loop
	// device; the helper's command allows only files under an allowed
	// user's state dir.
	LoopDetachable func(backing string) bool
}

// SystemExecutor does the helper's work for real: links through netlink,
// ip_forward through /proc/sys, loop devices through dmsnap. It serialises
// its link changes; loop changes take dmsnap's lock.
type SystemExecutor struct {
	cfg  SystemConfig
	ns   netns.NsHandle // < 0: the process's own namespace
	h    *netlink.Handle
	loop *dmsnap.Manager
	mu   sync.Mutex
}

var _ Executor = (*SystemExecutor)(nil)

// NewSystemExecutor opens a netlink socket in the configured namespace.
// It changes nothing on the host; Close releases the socket.
func NewSystemExecutor(cfg SystemConfig) (*SystemExecutor, error) {
	if cfg.TapPrefix == "" {
		cfg.TapPrefix = "bgtap"
	}
	e := &SystemExecutor{cfg: cfg, ns: -1, loop: &dmsnap.Manager{LockDir: cfg.LockDir}}
	var err error
	if cfg.NetNS != "" {
		if e.ns, err = netns.GetFromPath(cfg.NetNS); err != nil {
			return nil, fmt.Errorf("open the network namespace %s: %w", cfg.NetNS, err)
		}
		e.h, err = netlink.NewHandleAt(e.ns)
	} else {
		// Pin the namespace of the caller now: sysctl writes and tap
		// creation act on the namespace of whichever thread runs them, and
		// request handlers run on other threads than the constructor.
		if e.ns, err = netns.Get(); err != nil {
			return nil, fmt.Errorf("open the current network namespace: %w", err)
		}
		e.h, err = netlink.NewHandleAt(e.ns)
	}
	if err != nil {
		if e.ns >= 0 {
			e.ns.Close()
		}
		return nil, fmt.Errorf("open a netlink socket: %w", err)
	}
	return e, nil
}

// Close releases the netlink socket and the namespace handle.
func (e *SystemExecutor) Close() error {
	e.h.Close()
	if e.ns >= 0 {
		return e.ns.Close()
	}
	return nil
}

// EnsureBridge makes bridge exist with subnet's first host address as the
// gateway, and up. A second call changes nothing.
func (e *SystemExecutor) EnsureBridge(ctx context.Context, bridge, subnet string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	p, err := netip.ParsePrefix(subnet)
	if err != nil || !p.Addr().Is4() || p != p.Masked() || p.Bits() > 30 {
		return fmt.Errorf("subnet %q is not an IPv4 network of /30 or wider", subnet)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	return netmgr.EnsureBridge(e.h, bridge, netip.PrefixFrom(p.Addr().Next(), p.Bits()))
}

// TeardownBridge deletes bridge and banger's taps on it. A missing bridge
// is not an error.
func (e *SystemExecutor) TeardownBridge(ctx context.Context, bridge string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	return netmgr.DeleteBridge(e.h, bridge, e.cfg.TapPrefix)
}

// CreateTap makes tap, owned by owner and owner's primary group, on
// bridge and up. An existing tap of the same owner is reused; one owned by
// someone else is refused, so one user cannot take over another's tap.
func (e *SystemExecutor) CreateTap(ctx context.Context, tap, bridge string, owner uint32) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	gid := primaryGID(owner)
	e.mu.Lock()
	defer e.mu.Unlock()
	l, err := e.h.LinkByName(tap)
	if err == nil {
		if t, ok := l.(*netlink.Tuntap); ok && t.Owner != owner {
			return fmt.Errorf("tap %s already exists and belongs to uid %d, not %d: delete it first", tap, t.Owner, owner)
		}
	}
	return netmgr.CreateTap(e.ns, e.h, tap, bridge, int(owner), gid)
}

// nogroup is the group of a tap whose owner has no passwd entry.
const nogroup = 65534

// primaryGID is uid's group from the passwd database, or nogroup when
// uid has no entry (an allow list may name bare uids).
func primaryGID(uid uint32) int {
	u, err := user.LookupId(strconv.FormatUint(uint64(uid), 10))
	if err != nil {
		return nogroup
	}
	g, err := strconv.Atoi(u.Gid)
	if err != nil || g < 0 {
		return nogroup
	}
	return g
}

// DeleteTap deletes tap; a missing tap is not an error.
func (e *SystemExecutor) DeleteTap(ctx context.Context, tap string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	return netmgr.DeleteTap(e.h, tap)
}

// EnableIPForward turns net.ipv4.ip_forward on.
func (e *SystemExecutor) EnableIPForward(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return netmgr.EnableIPForward(e.ns)
}

// LoopAttach binds path to a loop device that stays bound until
// LoopDetach.
func (e *SystemExecutor) LoopAttach(ctx context.Context, path string, readOnly bool) (string, error) {
	return e.loop.AttachLoop(ctx, path, readOnly)
}

// LoopDetach unbinds device if LoopDetachable allows its backing file. An
// unbound device is not an error.
func (e *SystemExecutor) LoopDetach(ctx context.Context, device string) error {
	backing, err := dmsnap.LoopBacking(device)
	if err != nil {
		return err
	}
	if backing == "" {
		return nil
	}
	if e.cfg.LoopDetachable != nil && !e.cfg.LoopDetachable(backing) {
		return fmt.Errorf("%s is bound to %s, which is not in an allowed user's banger state dir: not detaching it", device, backing)
	}
	return e.loop.DetachLoop(ctx, device)
}

// under reports whether path lies strictly inside dir (both cleaned).
func under(dir, path string) bool {
	rel, err := filepath.Rel(dir, path)
	return err == nil && rel != "." && rel != ".." && !strings.HasPrefix(rel, "../")
}

// stateDirsDetachable returns a LoopDetachable that allows backing files
// inside the state dir (symlinks resolved) of one of uids.
func stateDirsDetachable(p Policy, uids map[uint32]bool) func(string) bool {
	return func(backing string) bool {
		for uid := range uids {
			dir, err := p.stateDir(uid)
			if err != nil {
				continue
			}
			if real, err := filepath.EvalSymlinks(dir); err == nil {
				dir = real
			}
			if under(dir, backing) {
				return true
			}
		}
		return false
	}
}
