package boot

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sort"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// applyNetwork brings lo and the interface up, sets the MTU, puts the
// address on the interface and points the default route at the gateway,
// all through netlink. Only what differs is changed.
func applyNetwork(ctx context.Context, s Settings, env *Env) (Status, string, error) {
	if !s.Networked() {
		return StatusSkipped, "no banger.ip, banger.gw, banger.mtu or banger.iface", nil
	}
	h := env.Netlink
	if h == nil {
		var err error
		if h, err = netlink.NewHandle(unix.NETLINK_ROUTE); err != nil {
			return StatusFailed, "", fmt.Errorf("open a netlink socket: %w", err)
		}
		defer h.Close()
	}
	var errs []error
	var did []string

	if lo, err := h.LinkByName("lo"); err != nil {
		errs = append(errs, fmt.Errorf("find the loopback interface: %w", err))
	} else if lo.Attrs().Flags&net.FlagUp == 0 {
		if err := h.LinkSetUp(lo); err != nil {
			errs = append(errs, fmt.Errorf("bring lo up: %w", err))
		} else {
			did = append(did, "lo up")
		}
	}

	link, err := waitLink(ctx, h, s.Iface, env.LinkWait)
	if err != nil {
		return StatusFailed, "", errors.Join(append(errs, err)...)
	}
	name := link.Attrs().Name
	if s.MTU != 0 && link.Attrs().MTU != s.MTU {
		if err := h.LinkSetMTU(link, s.MTU); err != nil {
			errs = append(errs, fmt.Errorf("set the MTU of %s to %d: %w", name, s.MTU, err))
		} else {
			did = append(did, fmt.Sprintf("mtu %d", s.MTU))
		}
	}
	if link.Attrs().Flags&net.FlagUp == 0 {
		if err := h.LinkSetUp(link); err != nil {
			errs = append(errs, fmt.Errorf("bring %s up: %w", name, err))
		} else {
			did = append(did, name+" up")
		}
	}
	if s.Addr.IsValid() {
		changed, err := setAddr(h, link, s.Addr)
		if err != nil {
			errs = append(errs, err)
		} else if changed {
			did = append(did, "address "+s.Addr.String())
		}
	}
	if s.Gateway.IsValid() {
		changed, err := setDefaultRoute(h, link, s.Gateway)
		if err != nil {
			errs = append(errs, err)
		} else if changed {
			did = append(did, "default via "+s.Gateway.String())
		}
	}
	if len(did) == 0 {
		return StatusUnchanged, name, errors.Join(errs...)
	}
	return StatusDone, name + ": " + strings.Join(did, ", "), errors.Join(errs...)
}

// waitLink finds the interface called name, or the first non-loopback link
// with an Ethernet address when name is empty, waiting up to wait for it to
// appear.
func waitLink(ctx context.Context, h *netlink.Handle, name string, wait time.Duration) (netlink.Link, error) {
	deadline := time.Now().Add(wait)
	for {
		link, err := findLink(h, name)
		if err == nil {
			return link, nil
		}
		if time.Now().After(deadline) {
			return nil, err
		}
		t := time.NewTimer(100 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("%w (gave up: %w)", err, ctx.Err())
		case <-t.C:
		}
	}
}

func findLink(h *netlink.Handle, name string) (netlink.Link, error) {
	if name != "" {
		link, err := h.LinkByName(name)
		if err != nil {
			return nil, fmt.Errorf("find interface %s (from banger.iface): %w", name, err)
		}
		return link, nil
	}
	links, err := h.LinkList()
	if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
		return nil, fmt.Errorf("list network interfaces: %w", err)
	}
	sort.Slice(links, func(i, j int) bool { return links[i].Attrs().Index < links[j].Attrs().Index })
	for _, l := range links {
		a := l.Attrs()
		if a.Flags&net.FlagLoopback != 0 || len(a.HardwareAddr) != 6 {
			continue
		}
		return l, nil
	}
	return nil, errors.New("no network interface besides lo; check that the VM has a network device (or set banger.iface)")
}

// setAddr puts p on link. An address with the same IP but another prefix
// length is removed first; other addresses are left alone.
func setAddr(h *netlink.Handle, link netlink.Link, p netip.Prefix) (bool, error) {
	name := link.Attrs().Name
	addrs, err := h.AddrList(link, netlink.FAMILY_V4)
	if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
		return false, fmt.Errorf("list the addresses of %s: %w", name, err)
	}
	for _, a := range addrs {
		ip, ok := netip.AddrFromSlice(a.IP)
		if !ok || ip.Unmap() != p.Addr() {
			continue
		}
		if ones, _ := a.Mask.Size(); ones == p.Bits() {
			return false, nil
		}
		if err := h.AddrDel(link, &a); err != nil {
			return false, fmt.Errorf("remove the old address %s from %s: %w", a.IPNet, name, err)
		}
	}
	ipnet := &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), 32)}
	if err := h.AddrReplace(link, &netlink.Addr{IPNet: ipnet}); err != nil {
		return false, fmt.Errorf("add address %s to %s: %w", p, name, err)
	}
	return true, nil
}

// setDefaultRoute makes the main table's IPv4 default route go via gw on
// link. A gateway outside the interface's subnet is marked on-link.
func setDefaultRoute(h *netlink.Handle, link netlink.Link, gw netip.Addr) (bool, error) {
	dst := &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}
	routes, err := h.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
	if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
		return false, fmt.Errorf("list routes: %w", err)
	}
	for _, r := range routes {
		if isDefault(r) && r.LinkIndex == link.Attrs().Index && r.Gw != nil && r.Gw.Equal(gw.AsSlice()) && r.Priority == 0 {
			return false, nil
		}
	}
	route := &netlink.Route{LinkIndex: link.Attrs().Index, Dst: dst, Gw: gw.AsSlice(), Table: unix.RT_TABLE_MAIN}
	err = h.RouteReplace(route)
	if errors.Is(err, unix.ENETUNREACH) {
		route.Flags = int(netlink.FLAG_ONLINK)
		err = h.RouteReplace(route)
	}
	if err != nil {
		return false, fmt.Errorf("set the default route via %s on %s: %w", gw, link.Attrs().Name, err)
	}
	return true, nil
}

func isDefault(r netlink.Route) bool {
	if r.Dst == nil {
		return true
	}
	ones, _ := r.Dst.Mask.Size()
	return ones == 0 && r.Dst.IP.IsUnspecified()
}
