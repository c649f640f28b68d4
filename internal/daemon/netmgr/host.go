package netmgr

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"banger/internal/daemon/privops"
)

// Host does the privileged network steps (privops.Network) in one network
// namespace, for one user: new taps belong to that user, and the bridge
// and published ports are marked with the user's uid so that another
// user's banger cannot take them over or tear them down. It needs root.
// Calls are serialised, across the views made by As too.
type Host struct {
	ns       netns.NsHandle // < 0: the calling process's namespace
	h        *netlink.Handle
	mu       *sync.Mutex
	uid, gid int
	view     bool // made by As: Close leaves the socket to the original
	// sysctlDir remembers the sysctls the Host changed (RememberSysctlsIn);
	// "" remembers nothing and puts nothing back.
	sysctlDir string
}

var _ privops.Network = (*Host)(nil)

// HostOption adjusts a Host.
type HostOption func(*Host)

// InNetNS makes the Host work inside the network namespace ns instead of
// the caller's (tests and the helper's tests use this). The caller keeps
// ns open while the Host is in use.
func InNetNS(ns netns.NsHandle) HostOption { return func(h *Host) { h.ns = ns } }

// NewHost opens a netlink socket. It changes nothing on the host; Close
// releases the socket. Its user is the process's own uid and gid.
func NewHost(opts ...HostOption) (*Host, error) {
	h := &Host{ns: -1, mu: &sync.Mutex{}, uid: os.Getuid(), gid: os.Getgid()}
	for _, o := range opts {
		o(h)
	}
	var err error
	if h.ns >= 0 {
		h.h, err = netlink.NewHandleAt(h.ns)
	} else {
		h.h, err = netlink.NewHandle()
	}
	if err != nil {
		return nil, fmt.Errorf("netmgr: cannot open a netlink socket: %w", err)
	}
	return h, nil
}

// As returns a view of h acting for uid and gid: taps it makes are theirs,
// and it refuses a bridge, tap or published port of another uid. The view
// shares h's socket and lock; h must outlive it.
func (h *Host) As(uid, gid int) *Host {
	return &Host{ns: h.ns, h: h.h, mu: h.mu, uid: uid, gid: gid, view: true, sysctlDir: h.sysctlDir}
}

// Close releases the netlink socket of a Host made by NewHost.
func (h *Host) Close() error {
	if !h.view {
		h.h.Close()
	}
	return nil
}

// ownerAlias marks a bridge as belonging to uid's banger.
func ownerAlias(uid int) string { return "banger uid=" + strconv.Itoa(uid) }

// aliasOwner reads the uid of ownerAlias; ok is false for any other alias.
func aliasOwner(alias string) (int, bool) {
	v, ok := strings.CutPrefix(alias, "banger uid=")
	if !ok {
		return 0, false
	}
	n, err := strconv.Atoi(v)
	return n, err == nil
}

// checkBridgeOwner refuses a bridge that another uid's banger marked as
// its own. A missing bridge passes.
func (h *Host) checkBridgeOwner(bridge string) error {
	br, err := h.h.LinkByName(bridge)
	if isNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("netmgr: cannot look up bridge %s: %w", bridge, err)
	}
	uid, ok := aliasOwner(br.Attrs().Alias)
	switch {
	case ok && uid != h.uid:
		return fmt.Errorf("netmgr: bridge %s belongs to the banger of uid %d, not %d; each user needs their own bridge_name and bridge_subnet", bridge, uid, h.uid)
	case !ok && h.uid != 0:
		// Only root adopts a bridge nobody marked (an older banger's, or
		// one an administrator made); a user must not take it over.
		return fmt.Errorf("netmgr: bridge %s exists and is not marked as a banger bridge of uid %d; choose another bridge_name, or remove it", bridge, h.uid)
	}
	return nil
}

// begin starts every call on network n: it checks n and ctx, takes the
// Host's lock and refuses another uid's bridge. The caller runs unlock
// when done.
func (h *Host) begin(ctx context.Context, n privops.NetSpec) (unlock func(), err error) {
	if err := checkSpec(n); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	h.mu.Lock()
	if err := h.checkBridgeOwner(n.Bridge); err != nil {
		h.mu.Unlock()
		return nil, err
	}
	return h.mu.Unlock, nil
}

func checkSpec(n privops.NetSpec) error {
	if err := checkIfName("bridge name", n.Bridge); err != nil {
		return err
	}
	if err := checkIfName("tap prefix", n.TapPrefix); err != nil {
		return err
	}
	if !n.Subnet.IsValid() || !n.Subnet.Addr().Is4() || n.Subnet.Bits() > 30 || n.Subnet != n.Subnet.Masked() {
		return fmt.Errorf("netmgr: subnet %s is not an IPv4 network of /30 or wider", n.Subnet)
	}
	if n.Table == "" || len(n.Table) > 255 || strings.ContainsAny(n.Table, " \t\n\x00") {
		return fmt.Errorf("netmgr: nftables table name %q is not usable", n.Table)
	}
	return nil
}

// EnsureNetwork brings the host side up: the bridge with the gateway
// address, up and marked as this user's; the network's nftables table
// with its chains and rules; ip_forward on (its old value remembered, see
// RememberSysctlsIn). Whatever is already right is left alone, so a second
// call changes nothing.
func (h *Host) EnsureNetwork(ctx context.Context, n privops.NetSpec) error {
	unlock, err := h.begin(ctx, n)
	if err != nil {
		return err
	}
	defer unlock()
	return h.ensureLocked(ctx, n)
}

// ensureLocked is EnsureNetwork after begin.
func (h *Host) ensureLocked(ctx context.Context, n privops.NetSpec) error {
	if err := EnsureBridge(h.h, n.Bridge, netip.PrefixFrom(n.Gateway(), n.Subnet.Bits())); err != nil {
		return err
	}
	br, err := h.h.LinkByName(n.Bridge)
	if err != nil {
		return fmt.Errorf("netmgr: cannot look up bridge %s: %w", n.Bridge, err)
	}
	if br.Attrs().Alias != ownerAlias(h.uid) {
		if err := h.h.LinkSetAlias(br, ownerAlias(h.uid)); err != nil {
			return fmt.Errorf("netmgr: cannot mark bridge %s as uid %d's: %w", n.Bridge, h.uid, err)
		}
	}
	if err := h.ensureNft(n); err != nil {
		return err
	}
	return h.enableForward(ctx)
}

// TeardownNetwork removes the network's nftables table, banger's taps on
// the bridge and the bridge. When that was the namespace's last banger
// bridge (of any user), it puts ip_forward back to the value it had
// before banger turned it on, if banger did and remembered it
// (RememberSysctlsIn); otherwise it leaves ip_forward as it is.
func (h *Host) TeardownNetwork(ctx context.Context, n privops.NetSpec) error {
	unlock, err := h.begin(ctx, n)
	if err != nil {
		return err
	}
	defer unlock()
	if err := h.deleteTable(n); err != nil {
		return err
	}
	if err := DeleteBridge(h.h, n.Bridge, n.TapPrefix); err != nil {
		return err
	}
	return h.restoreForward(ctx)
}

// checkTap refuses a tap name outside the network's tap prefix.
func checkTap(n privops.NetSpec, tap string) error {
	if !strings.HasPrefix(tap, n.TapPrefix) {
		return fmt.Errorf("netmgr: tap %q does not start with the network's tap prefix %q", tap, n.TapPrefix)
	}
	return nil
}

// CreateTap makes tap on the bridge, up and owned by the Host's user. An
// existing tap of another user is refused.
func (h *Host) CreateTap(ctx context.Context, n privops.NetSpec, tap string) error {
	if err := checkTap(n, tap); err != nil {
		return err
	}
	unlock, err := h.begin(ctx, n)
	if err != nil {
		return err
	}
	defer unlock()
	if err := h.checkTapOwner(tap); err != nil {
		return err
	}
	return CreateTap(h.ns, h.h, tap, n.Bridge, h.uid, h.gid)
}

func (h *Host) checkTapOwner(tap string) error {
	l, err := h.h.LinkByName(tap)
	if err != nil {
		return nil // missing, or CreateTap/DeleteTap say what is wrong
	}
	if t, ok := l.(*netlink.Tuntap); ok && int(t.Owner) != h.uid {
		return fmt.Errorf("netmgr: tap %s belongs to uid %d, not %d", tap, t.Owner, h.uid)
	}
	return nil
}

// DeleteTap removes tap if it is the Host user's; a missing tap is not an
// error.
func (h *Host) DeleteTap(ctx context.Context, n privops.NetSpec, tap string) error {
	if err := checkTap(n, tap); err != nil {
		return err
	}
	unlock, err := h.begin(ctx, n)
	if err != nil {
		return err
	}
	defer unlock()
	if err := h.checkTapOwner(tap); err != nil {
		return err
	}
	return DeleteTap(h.h, tap)
}
