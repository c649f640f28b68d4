package netmgr

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// Defaults for the fields of Config left empty.
const (
	DefaultBridge    = "banger0"
	DefaultTapPrefix = "bgtap"
	DefaultTable     = "banger"
)

// DefaultSubnet is the subnet used when Config.Subnet is unset.
var DefaultSubnet = netip.MustParsePrefix("10.200.0.0/24")

// Config names banger's network objects.
type Config struct {
	Bridge    string       // bridge name (bridge_name), ≤ 15 bytes
	Subnet    netip.Prefix // IPv4 subnet (bridge_subnet); the gateway is its first host address
	TapPrefix string       // tap names are TapPrefix + a short VM id, ≤ 15 bytes in all
	Table     string       // the nftables table (family ip) banger owns
	// ResolvConf is the resolver file guests' DNS servers come from;
	// "" means /etc/resolv.conf.
	ResolvConf string
}

// Attachment is what a VM needs to use its network.
type Attachment struct {
	Tap     string           // the tap device, on the bridge and up
	MAC     net.HardwareAddr // the guest NIC's address: 02 and five bytes derived from the VM id
	IP      netip.Prefix     // the guest's address with the subnet's length
	Gateway netip.Addr       // the bridge's address, the guest's default route
	DNS     []netip.Addr     // resolvers for the guest (see HostResolvers)
}

// Manager owns banger's host networking in one network namespace.
type Manager struct {
	cfg      Config
	leases   Leases
	ns       netns.NsHandle // < 0: the calling process's namespace
	h        *netlink.Handle
	tapUID   int
	tapGID   int
	resolved string // systemd-resolved's upstream resolv.conf
	gateway  netip.Addr

	mu sync.Mutex // serialises changes to links and nftables
}

// Option adjusts a Manager.
type Option func(*Manager)

// WithNetNS makes the Manager work inside the network namespace ns instead
// of the caller's (tests use this). The caller keeps ns open while the
// Manager is in use.
func WithNetNS(ns netns.NsHandle) Option { return func(m *Manager) { m.ns = ns } }

// WithTapOwner sets the user and group that own new taps, so that a VMM
// running as that user can open them. The default is the process's own
// uid and gid.
func WithTapOwner(uid, gid int) Option {
	return func(m *Manager) { m.tapUID, m.tapGID = uid, gid }
}

// New checks cfg, fills its defaults and returns a Manager. It changes
// nothing on the host; Close releases its netlink socket.
func New(cfg Config, leases Leases, opts ...Option) (*Manager, error) {
	if leases == nil {
		return nil, errors.New("netmgr: no lease store given")
	}
	if cfg.Bridge == "" {
		cfg.Bridge = DefaultBridge
	}
	if !cfg.Subnet.IsValid() {
		cfg.Subnet = DefaultSubnet
	}
	if cfg.TapPrefix == "" {
		cfg.TapPrefix = DefaultTapPrefix
	}
	if cfg.Table == "" {
		cfg.Table = DefaultTable
	}
	if cfg.ResolvConf == "" {
		cfg.ResolvConf = "/etc/resolv.conf"
	}
	if err := checkIfName("bridge_name", cfg.Bridge); err != nil {
		return nil, err
	}
	if err := checkIfName("tap prefix", cfg.TapPrefix); err != nil {
		return nil, err
	}
	if len(cfg.TapPrefix) > 7 {
		return nil, fmt.Errorf("netmgr: tap prefix %q is longer than 7 bytes, leaving too little of the 15-byte name for the VM id", cfg.TapPrefix)
	}
	if strings.HasPrefix(cfg.Bridge, cfg.TapPrefix) {
		return nil, fmt.Errorf("netmgr: bridge name %q starts with the tap prefix %q; choose another bridge_name", cfg.Bridge, cfg.TapPrefix)
	}
	if cfg.Table == "" || len(cfg.Table) > 255 || strings.ContainsAny(cfg.Table, " \t\n\x00") {
		return nil, fmt.Errorf("netmgr: nftables table name %q is not usable", cfg.Table)
	}
	if !cfg.Subnet.Addr().Is4() || cfg.Subnet.Bits() > 30 || cfg.Subnet.Bits() < 8 {
		return nil, fmt.Errorf("netmgr: bridge_subnet %s must be an IPv4 subnet between /8 and /30", cfg.Subnet)
	}
	if cfg.Subnet != cfg.Subnet.Masked() {
		return nil, fmt.Errorf("netmgr: bridge_subnet %s has host bits set; did you mean %s?", cfg.Subnet, cfg.Subnet.Masked())
	}
	m := &Manager{
		cfg:      cfg,
		leases:   leases,
		ns:       -1,
		tapUID:   os.Getuid(),
		tapGID:   os.Getgid(),
		resolved: SystemdResolvedConf,
		gateway:  cfg.Subnet.Addr().Next(),
	}
	for _, o := range opts {
		o(m)
	}
	var err error
	if m.ns >= 0 {
		m.h, err = netlink.NewHandleAt(m.ns)
	} else {
		m.h, err = netlink.NewHandle()
	}
	if err != nil {
		return nil, fmt.Errorf("netmgr: cannot open a netlink socket: %w", err)
	}
	return m, nil
}

// Close releases the Manager's netlink socket. It changes nothing on the
// host.
func (m *Manager) Close() error {
	m.h.Close()
	return nil
}

// Config returns the configuration in use, defaults filled in.
func (m *Manager) Config() Config { return m.cfg }

// Gateway returns the bridge's address.
func (m *Manager) Gateway() netip.Addr { return m.gateway }

func checkIfName(what, s string) error {
	if s == "" || len(s) > 15 || strings.ContainsAny(s, "/: \t\n\x00") || s == "." || s == ".." {
		return fmt.Errorf("netmgr: %s %q is not a valid interface name (1 to 15 bytes, no '/', ':' or spaces)", what, s)
	}
	return nil
}

// TapName returns the tap name for vmID: the prefix followed by the start
// of the id (or of its SHA-256 when the id is not lower-case alphanumeric),
// 15 bytes at most.
func (m *Manager) TapName(vmID string) string {
	id := vmID
	for _, r := range id {
		if (r < 'a' || r > 'z') && (r < '0' || r > '9') {
			sum := sha256.Sum256([]byte(vmID))
			id = hex.EncodeToString(sum[:])
			break
		}
	}
	n := 15 - len(m.cfg.TapPrefix)
	if len(id) > n {
		id = id[:n]
	}
	return m.cfg.TapPrefix + id
}

// MACFor returns the guest MAC for vmID: locally administered, unicast
// (first byte 02), then the first five bytes of SHA-256(vmID).
func MACFor(vmID string) net.HardwareAddr {
	sum := sha256.Sum256([]byte(vmID))
	return net.HardwareAddr{0x02, sum[0], sum[1], sum[2], sum[3], sum[4]}
}

func checkVMID(vmID string) error {
	if vmID == "" || len(vmID) > 128 {
		return fmt.Errorf("netmgr: VM id %q is empty or too long", vmID)
	}
	for _, r := range vmID {
		if r <= ' ' || r > '~' {
			return fmt.Errorf("netmgr: VM id %q has a space or a non-printable character", vmID)
		}
	}
	return nil
}

// Ensure brings the host side up: the bridge with the gateway address,
// up; banger's nftables table with its chains and rules; ip_forward on.
// Whatever is already right is left alone, so a second call changes
// nothing.
func (m *Manager) Ensure(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.ensureLocked()
}

func (m *Manager) ensureLocked() error {
	if err := EnsureBridge(m.h, m.cfg.Bridge, netip.PrefixFrom(m.gateway, m.cfg.Subnet.Bits())); err != nil {
		return err
	}
	if err := m.ensureNft(); err != nil {
		return err
	}
	return EnableIPForward(m.ns)
}

func isNotFound(err error) bool {
	var lnf netlink.LinkNotFoundError
	return errors.As(err, &lnf)
}

func ipNetPrefix(n *net.IPNet) (netip.Prefix, bool) {
	if n == nil {
		return netip.Prefix{}, false
	}
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), ones), true
}

// Attach leases an address for vmID, makes sure the host side is up (the
// first VM sets it up), and creates the VM's tap on the bridge, owned by
// the tap owner and up. Attaching an attached VM returns the same
// attachment. On failure a lease taken by this call is released.
func (m *Manager) Attach(ctx context.Context, vmID string) (Attachment, error) {
	if err := checkVMID(vmID); err != nil {
		return Attachment{}, err
	}
	before, err := m.leases.List(ctx)
	if err != nil {
		return Attachment{}, fmt.Errorf("netmgr: cannot list leases: %w", err)
	}
	_, had := before[vmID]
	pick := func(used []netip.Addr) (netip.Addr, error) { return PickFree(m.cfg.Subnet, used) }
	ip, err := m.leases.Acquire(ctx, vmID, pick)
	if err != nil {
		return Attachment{}, fmt.Errorf("netmgr: cannot lease an address for VM %s: %w", vmID, err)
	}
	if !m.cfg.Subnet.Contains(ip) || ip == m.gateway || ip == lastAddr(m.cfg.Subnet) || ip == m.cfg.Subnet.Addr() {
		// A lease from an older bridge_subnet: take a new one.
		if err := m.leases.Release(ctx, vmID); err != nil {
			return Attachment{}, fmt.Errorf("netmgr: cannot release VM %s's stale lease %s: %w", vmID, ip, err)
		}
		had = false
		if ip, err = m.leases.Acquire(ctx, vmID, pick); err != nil {
			return Attachment{}, fmt.Errorf("netmgr: cannot lease an address for VM %s: %w", vmID, err)
		}
	}
	att, err := m.attach(ctx, vmID, ip)
	if err != nil && !had {
		if rerr := m.leases.Release(context.WithoutCancel(ctx), vmID); rerr != nil {
			err = fmt.Errorf("%w (and releasing its lease failed: %v)", err, rerr)
		}
	}
	return att, err
}

func (m *Manager) attach(ctx context.Context, vmID string, ip netip.Addr) (Attachment, error) {
	if err := ctx.Err(); err != nil {
		return Attachment{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.ensureLocked(); err != nil {
		return Attachment{}, err
	}
	name := m.TapName(vmID)
	if err := CreateTap(m.ns, m.h, name, m.cfg.Bridge, m.tapUID, m.tapGID); err != nil {
		return Attachment{}, fmt.Errorf("%w (VM %s)", err, vmID)
	}
	return Attachment{
		Tap:     name,
		MAC:     MACFor(vmID),
		IP:      netip.PrefixFrom(ip, m.cfg.Subnet.Bits()),
		Gateway: m.gateway,
		DNS:     m.dns(),
	}, nil
}

// dns is the resolver list for guests: the host's (see Resolvers), or the
// gateway when the host has none a guest can reach.
func (m *Manager) dns() []netip.Addr {
	if r := Resolvers(m.cfg.ResolvConf, m.resolved); len(r) > 0 {
		return r
	}
	return []netip.Addr{m.gateway}
}

// deleteTap removes a tap, ignoring one that is already gone.
func (m *Manager) deleteTap(name string) error { return DeleteTap(m.h, name) }

// Detach deletes vmID's tap and published ports and releases its lease.
// Detaching a VM that is not attached is not an error.
func (m *Manager) Detach(ctx context.Context, vmID string) error {
	if err := checkVMID(vmID); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.Lock()
	err := m.deleteTap(m.TapName(vmID))
	if err == nil {
		err = m.unpublishLocked(vmID, 0)
	}
	m.mu.Unlock()
	if err != nil {
		return err
	}
	if err := m.leases.Release(ctx, vmID); err != nil {
		return fmt.Errorf("netmgr: cannot release VM %s's lease: %w", vmID, err)
	}
	return nil
}

// TeardownIfUnused removes banger's nftables table, any leftover taps on
// the bridge and the bridge itself when no lease remains. It leaves
// ip_forward as it is: other software may rely on it by now.
func (m *Manager) TeardownIfUnused(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	leases, err := m.leases.List(ctx)
	if err != nil {
		return fmt.Errorf("netmgr: cannot list leases: %w", err)
	}
	if len(leases) > 0 {
		return nil
	}
	if err := m.deleteTable(); err != nil {
		return err
	}
	return DeleteBridge(m.h, m.cfg.Bridge, m.cfg.TapPrefix)
}
