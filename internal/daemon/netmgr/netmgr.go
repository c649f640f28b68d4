package netmgr

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"banger/internal/daemon/privops"
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
	// DNSPort, when not 0, redirects guests' DNS queries to the gateway's
	// port 53 to this port (see privops.NetSpec).
	DNSPort uint16
}

// Attachment is what a VM needs to use its network.
type Attachment struct {
	Tap     string           // the tap device, on the bridge and up
	MAC     net.HardwareAddr // the guest NIC's address: 02 and five bytes derived from the VM id
	IP      netip.Prefix     // the guest's address with the subnet's length
	Gateway netip.Addr       // the bridge's address, the guest's default route
	DNS     []netip.Addr     // resolvers for the guest (see HostResolvers)
}

// Manager runs banger's bridged networking for one bangerd: it leases
// addresses, names taps and MACs, finds the guests' resolvers, and asks a
// privops.Network (root in-process, or the helper) for the privileged
// steps.
type Manager struct {
	cfg      Config
	leases   Leases
	ops      privops.Network
	owned    *Host // made by New when no WithOps was given; closed by Close
	ns       netns.NsHandle
	tapUID   int // -1: the process's own
	tapGID   int
	sysctls  string // the in-process Host's RememberSysctlsIn
	resolved string // systemd-resolved's upstream resolv.conf
	gateway  netip.Addr

	// mu orders tap creation against teardown: Attach takes its lease
	// before it, so a teardown under mu sees the lease or runs before the
	// network is brought up again.
	mu sync.Mutex
}

// Option adjusts a Manager.
type Option func(*Manager)

// WithOps makes the Manager do its privileged steps through ops (the
// helper's client, say) rather than in-process.
func WithOps(ops privops.Network) Option { return func(m *Manager) { m.ops = ops } }

// WithNetNS makes the in-process Host work inside the network namespace
// ns instead of the caller's (tests use this). The caller keeps ns open
// while the Manager is in use. It has no effect with WithOps.
func WithNetNS(ns netns.NsHandle) Option { return func(m *Manager) { m.ns = ns } }

// WithTapOwner makes the in-process Host act for uid and gid: new taps
// are theirs, so that a VMM running as that user can open them. The
// default is the process's own uid and gid. No effect with WithOps.
func WithTapOwner(uid, gid int) Option {
	return func(m *Manager) { m.tapUID, m.tapGID = uid, gid }
}

// WithSysctlDir makes the in-process Host remember the sysctls it changes
// in dir and put them back after the last teardown (see
// RememberSysctlsIn). No effect with WithOps.
func WithSysctlDir(dir string) Option { return func(m *Manager) { m.sysctls = dir } }

// TableFor is the nftables table of the network on bridge: "banger" for
// the default bridge, "banger-BRIDGE" for any other, so that two networks
// on one host never share a table.
func TableFor(bridge string) string {
	if bridge == DefaultBridge || bridge == "" {
		return DefaultTable
	}
	return DefaultTable + "-" + bridge
}

// New checks cfg, fills its defaults and returns a Manager. It changes
// nothing on the host; Close releases what it opened.
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
		cfg.Table = TableFor(cfg.Bridge)
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
		tapUID:   -1,
		resolved: SystemdResolvedConf,
		gateway:  cfg.Subnet.Addr().Next(),
	}
	for _, o := range opts {
		o(m)
	}
	if m.ops == nil {
		var hopts []HostOption
		if m.ns >= 0 {
			hopts = append(hopts, InNetNS(m.ns))
		}
		if m.sysctls != "" {
			hopts = append(hopts, RememberSysctlsIn(m.sysctls))
		}
		h, err := NewHost(hopts...)
		if err != nil {
			return nil, err
		}
		m.ops, m.owned = h, h
		if m.tapUID >= 0 {
			m.ops = h.As(m.tapUID, m.tapGID)
		}
	}
	return m, nil
}

// Close releases the in-process Host's netlink socket, if the Manager made
// one. It changes nothing on the host.
func (m *Manager) Close() error {
	if m.owned != nil {
		return m.owned.Close()
	}
	return nil
}

// Config returns the configuration in use, defaults filled in.
func (m *Manager) Config() Config { return m.cfg }

// Spec is the network the Manager asks its privops.Network about.
func (m *Manager) Spec() privops.NetSpec {
	return privops.NetSpec{Bridge: m.cfg.Bridge, Subnet: m.cfg.Subnet, TapPrefix: m.cfg.TapPrefix, Table: m.cfg.Table, DNSPort: m.cfg.DNSPort}
}

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
// up; banger's nftables table with its chains and rules; ip_forward on
// (remembering its old value, see RememberSysctlsIn).
// Whatever is already right is left alone, so a second call changes
// nothing.
func (m *Manager) Ensure(ctx context.Context) error {
	return m.ops.EnsureNetwork(ctx, m.Spec())
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
	if err := m.ops.EnsureNetwork(ctx, m.Spec()); err != nil {
		return Attachment{}, err
	}
	name := m.TapName(vmID)
	if err := m.ops.CreateTap(ctx, m.Spec(), name); err != nil {
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

// HostDNS is the resolver list a guest would get without banger's DNS
// responder (see dns).
func (m *Manager) HostDNS() []netip.Addr { return m.dns() }

// dns is the resolver list for guests: the host's (see Resolvers), or the
// gateway when the host has none a guest can reach.
func (m *Manager) dns() []netip.Addr {
	if r := Resolvers(m.cfg.ResolvConf, m.resolved); len(r) > 0 {
		return r
	}
	return []netip.Addr{m.gateway}
}

// Detach deletes vmID's tap and published ports and releases its lease.
// Detaching a VM that is not attached is not an error.
func (m *Manager) Detach(ctx context.Context, vmID string) error {
	if err := checkVMID(vmID); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := m.ops.DeleteTap(ctx, m.Spec(), m.TapName(vmID)); err != nil {
		return err
	}
	if err := m.ops.Unpublish(ctx, m.Spec(), vmID, 0); err != nil {
		return err
	}
	if err := m.leases.Release(ctx, vmID); err != nil {
		return fmt.Errorf("netmgr: cannot release VM %s's lease: %w", vmID, err)
	}
	return nil
}

// Publish forwards TCP hostPort on every local address of the host to
// guestIP:guestPort (see privops.Network.Publish).
func (m *Manager) Publish(ctx context.Context, vmID string, hostPort uint16, guestIP netip.Addr, guestPort uint16) error {
	if err := checkVMID(vmID); err != nil {
		return err
	}
	if !m.cfg.Subnet.Contains(guestIP) {
		return fmt.Errorf("netmgr: cannot publish port %d for VM %s: guest address %s is outside %s", hostPort, vmID, guestIP, m.cfg.Subnet)
	}
	return m.ops.Publish(ctx, m.Spec(), privops.Publish{VMID: vmID, HostPort: hostPort, Guest: netip.AddrPortFrom(guestIP, guestPort)})
}

// Unpublish removes what Publish added for vmID and hostPort; removing what
// is not there is not an error.
func (m *Manager) Unpublish(ctx context.Context, vmID string, hostPort uint16) error {
	if hostPort == 0 {
		return fmt.Errorf("netmgr: cannot unpublish port 0 for VM %s", vmID)
	}
	return m.ops.Unpublish(ctx, m.Spec(), vmID, hostPort)
}

// TeardownIfUnused removes banger's nftables table, any leftover taps on
// the bridge and the bridge itself when no lease remains; the last banger
// bridge of the host puts ip_forward back as it was (see
// privops.Network.TeardownNetwork).
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
	return m.ops.TeardownNetwork(ctx, m.Spec())
}
