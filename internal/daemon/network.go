package daemon

import (
	"banger/internal/hostprobe"
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"banger/internal/daemon/dnsd"
	"banger/internal/daemon/netmgr"
	"banger/internal/store"
)

// userDNSPort is where a user's bangerd, which cannot bind port 53, runs
// the gateway's DNS responder; the network's nftables table redirects
// guests' queries to port 53 there.
const userDNSPort = 10053

// bridgeDNSPort is the NetSpec's DNSPort for this daemon: 0 (port 53 as it
// is) as root.
func bridgeDNSPort() uint16 {
	if os.Geteuid() == 0 {
		return 0
	}
	return userDNSPort
}

func dnsListenPort(redirect uint16) uint16 {
	if redirect == 0 {
		return 53
	}
	return redirect
}

// Network modes of a VM.
const (
	netBridge = "bridge"
	netUser   = "user"
)

// network decides how VMs are networked and owns the bridge when there is
// one. The netmgr.Manager is made on first use, so a daemon that only runs
// user-mode VMs never touches the host's network.
type network struct {
	cfgMode string
	bridge  netmgr.Config
	hosts   string
	st      *store.Store
	priv    *privileged // the vmManager's, which closes it

	log *slog.Logger

	mu      sync.Mutex
	nm      *netmgr.Manager
	dns     *dnsd.Server
	dnsStop context.CancelFunc
	dnsDone chan error
}

// storeLeases backs netmgr's leases with the store.
type storeLeases struct{ st *store.Store }

func (l storeLeases) Acquire(ctx context.Context, vmID string, pick func([]netip.Addr) (netip.Addr, error)) (netip.Addr, error) {
	return l.st.AcquireLease(ctx, vmID, pick)
}
func (l storeLeases) Release(ctx context.Context, vmID string) error {
	return l.st.ReleaseLease(ctx, vmID)
}
func (l storeLeases) List(ctx context.Context) (map[string]netip.Addr, error) {
	return l.st.ListLeases(ctx)
}

// mode resolves the configured mode for one VM start: the bridge when
// bangerd can do privileged work (as root, or through the helper).
func (n *network) mode(ctx context.Context) (string, error) {
	switch n.cfgMode {
	case netUser:
		return netUser, nil
	case netBridge:
		if _, err := n.priv.get(ctx); err != nil {
			return "", fmt.Errorf("network = \"bridge\" needs bangerd to run as root or the banger helper (see docs/install.md): %w; or use network = \"user\"", err)
		}
		if err := hostprobe.ProbeTUN(hostprobe.System()).Problem(); err != nil {
			return "", fmt.Errorf("network = \"bridge\": %w; or use network = \"user\"", err)
		}
		return netBridge, nil
	default: // auto
		if _, err := n.priv.get(ctx); err != nil {
			n.log.Debug("network = auto picks user-mode networking", "reason", err)
			return netUser, nil
		}
		if err := hostprobe.ProbeTUN(hostprobe.System()).Problem(); err != nil {
			n.log.Warn("network = auto picks user-mode networking", "reason", err)
			return netUser, nil
		}
		return netBridge, nil
	}
}

func (n *network) manager(ctx context.Context) (*netmgr.Manager, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.nm != nil {
		return n.nm, nil
	}
	ops, err := n.priv.get(ctx)
	if err != nil {
		return nil, fmt.Errorf("set up bridged networking: %w", err)
	}
	nm, err := netmgr.New(n.bridge, storeLeases{n.st}, netmgr.WithOps(ops))
	if err != nil {
		return nil, fmt.Errorf("set up bridged networking: %w", err)
	}
	n.nm = nm
	return nm, nil
}

// attach gives a VM its tap, address and published ports.
func (n *network) attach(ctx context.Context, v store.VM) (netmgr.Attachment, error) {
	nm, err := n.manager(ctx)
	if err != nil {
		return netmgr.Attachment{}, err
	}
	att, err := nm.Attach(ctx, v.ID)
	if err != nil {
		return att, fmt.Errorf("attach %s to bridge %s: %w", v.Name, n.bridge.Bridge, err)
	}
	// Guests ask the gateway, where bangerd answers NAME.banger and
	// host.banger and forwards the rest to the host's resolvers.
	if err := n.ensureDNS(att.Gateway, att.DNS); err != nil {
		n.log.Warn("no DNS responder on the bridge; guests use the host's resolvers and cannot resolve NAME.banger", "error", err)
	} else {
		att.DNS = []netip.Addr{att.Gateway}
	}
	for _, p := range v.Publish {
		if err := nm.Publish(ctx, v.ID, p.HostPort, att.IP.Addr(), p.GuestPort); err != nil {
			_ = nm.Detach(context.WithoutCancel(ctx), v.ID)
			return att, fmt.Errorf("publish port %d of %s: %w", p.HostPort, v.Name, err)
		}
	}
	return att, nil
}

// detach removes a VM's tap, ports and lease, and the bridge after the
// last VM.
func (n *network) detach(ctx context.Context, vmID string) error {
	nm, err := n.manager(ctx)
	if err != nil {
		// No way to root: the tap and published ports stay, so the lease
		// stays too (its address must not go to another VM that would get
		// those ports); the next detach, or reconciliation, retries.
		return err
	}
	err = nm.Detach(ctx, vmID)
	if ls, lerr := n.st.ListLeases(ctx); lerr == nil && len(ls) == 0 {
		n.stopDNS()
	}
	if terr := nm.TeardownIfUnused(ctx); terr != nil && err == nil {
		err = terr
	}
	return err
}

// resumeDNS starts the responder for VMs re-adopted after a restart, which
// were told to ask the gateway. A failure is logged: the VMs still run.
func (n *network) resumeDNS(ctx context.Context) {
	nm, err := n.manager(ctx)
	if err == nil {
		err = n.ensureDNS(nm.Gateway(), nm.HostDNS())
	}
	if err != nil {
		n.log.Warn("cannot answer DNS for re-adopted bridged VMs", "error", err)
	}
}

// ensureDNS starts the responder on the gateway once the bridge has its
// address. Upstreams are the host's resolvers, never the gateway itself.
func (n *network) ensureDNS(gw netip.Addr, hostDNS []netip.Addr) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.dns != nil {
		return nil
	}
	var ups []netip.AddrPort
	for _, a := range hostDNS {
		if a != gw {
			ups = append(ups, netip.AddrPortFrom(a, 53))
		}
	}
	srv, err := dnsd.Listen(dnsd.Config{
		Addr:      netip.AddrPortFrom(gw, dnsListenPort(n.bridge.DNSPort)),
		Lookup:    n.lookup(gw),
		Upstreams: ups,
		Clients:   []netip.Prefix{n.bridge.Subnet},
	})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	n.dns, n.dnsStop, n.dnsDone = srv, cancel, done
	return nil
}

func (n *network) stopDNS() {
	n.mu.Lock()
	stop, done := n.dnsStop, n.dnsDone
	n.dns, n.dnsStop, n.dnsDone = nil, nil, nil
	n.mu.Unlock()
	if stop != nil {
		stop()
		<-done
	}
}

// lookup answers NAME.banger from the running bridged VMs, and host.banger
// with the gateway.
func (n *network) lookup(gw netip.Addr) dnsd.Lookup {
	return func(name string) (netip.Addr, bool) {
		if name == "host" {
			return gw, true
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		v, err := n.st.GetVM(ctx, name)
		if err != nil || v.State != store.VMRunning || v.Network != netBridge {
			return netip.Addr{}, false
		}
		a, err := netip.ParseAddr(v.IP)
		return a, err == nil
	}
}

// updateHosts rewrites the NAME.banger block of the hosts file from the
// running bridged VMs.
func (n *network) updateHosts(ctx context.Context) error {
	if n.hosts == "" {
		return nil
	}
	vms, err := n.st.ListVMs(ctx)
	if err != nil {
		return err
	}
	entries := map[string]netip.Addr{}
	for _, v := range vms {
		if v.State == store.VMRunning && v.Network == netBridge && v.IP != "" {
			if a, err := netip.ParseAddr(v.IP); err == nil {
				entries[v.Name] = a
			}
		}
	}
	return netmgr.UpdateHosts(n.hosts, entries)
}

func (n *network) close() {
	n.stopDNS()
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.nm != nil {
		_ = n.nm.Close()
		n.nm = nil
	}
}

// checkPublish validates -p values ("HOSTPORT:GUESTPORT") into ports.
func checkPublish(ps []string) ([]store.PortMap, error) {
	var out []store.PortMap
	seen := map[int]bool{}
	for _, p := range ps {
		hp, gp, ok := strings.Cut(p, ":")
		h, err1 := strconv.Atoi(hp)
		g, err2 := strconv.Atoi(gp)
		if !ok || err1 != nil || err2 != nil || h < 1 || h > 65535 || g < 1 || g > 65535 {
			return nil, inputf("-p %q is not HOSTPORT:GUESTPORT", p)
		}
		if seen[h] {
			return nil, inputf("-p: host port %d given twice", h)
		}
		seen[h] = true
		out = append(out, store.PortMap{HostPort: uint16(h), GuestPort: uint16(g)})
	}
	return out, nil
}
