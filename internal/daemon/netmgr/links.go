package netmgr

import (
	"fmt"
	"net"
	"net/netip"
	"strings"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// The functions in this file are the link-level steps the Manager is made
// of, exported so that the privileged helper can do exactly the same steps
// on behalf of a bangerd that runs as a user. They do no locking of their
// own; callers serialise changes.

// EnsureBridge makes sure the bridge name exists, carries the address gw
// (the gateway with the subnet's length, e.g. 10.200.0.1/24) and is up.
// What is already right is left alone. A subnet that overlaps an address
// on another interface is refused, and so is a link of that name that is
// not a bridge.
func EnsureBridge(h *netlink.Handle, name string, gw netip.Prefix) error {
	if err := checkIfName("bridge name", name); err != nil {
		return err
	}
	if !gw.Addr().Is4() {
		return fmt.Errorf("netmgr: bridge address %s is not an IPv4 address with a prefix length", gw)
	}
	subnet := gw.Masked()
	br, err := h.LinkByName(name)
	switch {
	case isNotFound(err):
		if err := checkSubnetFree(h, name, subnet); err != nil {
			return err
		}
		if err := h.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: name}}); err != nil {
			return fmt.Errorf("netmgr: cannot create bridge %s (needs root): %w", name, err)
		}
		if br, err = h.LinkByName(name); err != nil {
			return fmt.Errorf("netmgr: bridge %s vanished after creation: %w", name, err)
		}
	case err != nil:
		return fmt.Errorf("netmgr: cannot look up bridge %s: %w", name, err)
	}
	if br.Type() != "bridge" {
		return fmt.Errorf("netmgr: %s exists but is a %s, not a bridge; remove it or set bridge_name to another name", name, br.Type())
	}
	addrs, err := h.AddrList(br, netlink.FAMILY_V4)
	if err != nil {
		return fmt.Errorf("netmgr: cannot list the addresses of %s: %w", name, err)
	}
	have := false
	for _, a := range addrs {
		if p, ok := ipNetPrefix(a.IPNet); ok && p == gw {
			have = true
		}
	}
	if !have {
		if err := checkSubnetFree(h, name, subnet); err != nil {
			return err
		}
		ipn := &net.IPNet{IP: gw.Addr().AsSlice(), Mask: net.CIDRMask(gw.Bits(), 32)}
		if err := h.AddrAdd(br, &netlink.Addr{IPNet: ipn}); err != nil {
			return fmt.Errorf("netmgr: cannot add %s to bridge %s: %w", gw, name, err)
		}
	}
	if br.Attrs().Flags&net.FlagUp == 0 {
		if err := h.LinkSetUp(br); err != nil {
			return fmt.Errorf("netmgr: cannot bring bridge %s up: %w", name, err)
		}
	}
	return nil
}

// checkSubnetFree refuses a subnet that overlaps an address on an
// interface other than bridge, which would make routing ambiguous.
func checkSubnetFree(h *netlink.Handle, bridge string, subnet netip.Prefix) error {
	addrs, err := h.AddrList(nil, netlink.FAMILY_V4)
	if err != nil {
		return fmt.Errorf("netmgr: cannot list host addresses: %w", err)
	}
	for _, a := range addrs {
		p, ok := ipNetPrefix(a.IPNet)
		if !ok || !p.Overlaps(subnet) {
			continue
		}
		l, err := h.LinkByIndex(a.LinkIndex)
		if err == nil && l.Attrs().Name == bridge {
			continue
		}
		name := fmt.Sprintf("interface %d", a.LinkIndex)
		if err == nil {
			name = l.Attrs().Name
		}
		return fmt.Errorf("netmgr: bridge_subnet %s overlaps %s on %s; set bridge_subnet to a free range", subnet, p, name)
	}
	return nil
}

// CreateTap makes sure the tap name exists, is on bridge and is up. A new
// tap is owned by uid and gid, so that a VMM running as
// that user can open it; an existing tap is reused as it is. ns is the
// network namespace h works in, or a negative handle for the caller's own:
// /dev/net/tun makes the device in the opening thread's namespace. A tap
// that this call created is deleted again when a later step fails.
func CreateTap(ns netns.NsHandle, h *netlink.Handle, name, bridge string, uid, gid int) error {
	if err := checkIfName("tap name", name); err != nil {
		return err
	}
	if uid < 0 || gid < 0 {
		return fmt.Errorf("netmgr: tap %s: owner %d:%d is not a valid uid:gid", name, uid, gid)
	}
	br, err := h.LinkByName(bridge)
	if err != nil {
		return fmt.Errorf("netmgr: cannot look up bridge %s for tap %s: %w", bridge, name, err)
	}
	if br.Type() != "bridge" {
		return fmt.Errorf("netmgr: %s is a %s, not a bridge; cannot put tap %s on it", bridge, br.Type(), name)
	}
	tap, err := h.LinkByName(name)
	switch {
	case isNotFound(err):
		t := &netlink.Tuntap{
			LinkAttrs: netlink.LinkAttrs{Name: name},
			Mode:      netlink.TUNTAP_MODE_TAP,
			Flags:     netlink.TUNTAP_NO_PI | netlink.TUNTAP_VNET_HDR | netlink.TUNTAP_TUN_EXCL,
			Owner:     uint32(uid),
			Group:     uint32(gid),
		}
		if err := runIn(ns, func() error { return h.LinkAdd(t) }); err != nil {
			return fmt.Errorf("netmgr: cannot create tap %s (needs root and /dev/net/tun): %w", name, err)
		}
		if tap, err = h.LinkByName(name); err != nil {
			return fmt.Errorf("netmgr: tap %s vanished after creation: %w", name, err)
		}
	case err != nil:
		return fmt.Errorf("netmgr: cannot look up tap %s: %w", name, err)
	case tap.Type() != "tuntap":
		return fmt.Errorf("netmgr: %s exists but is a %s, not a tap; remove it", name, tap.Type())
	}
	if tap.Attrs().MasterIndex != br.Attrs().Index {
		if err := h.LinkSetMaster(tap, br); err != nil {
			_ = DeleteTap(h, name)
			return fmt.Errorf("netmgr: cannot put tap %s on bridge %s: %w", name, bridge, err)
		}
	}
	if tap.Attrs().Flags&net.FlagUp == 0 {
		if err := h.LinkSetUp(tap); err != nil {
			_ = DeleteTap(h, name)
			return fmt.Errorf("netmgr: cannot bring tap %s up: %w", name, err)
		}
	}
	return nil
}

// DeleteTap removes the tap name. A tap that is already gone is not an
// error; a link of that name that is not a tap is refused.
func DeleteTap(h *netlink.Handle, name string) error {
	l, err := h.LinkByName(name)
	if isNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("netmgr: cannot look up tap %s: %w", name, err)
	}
	if l.Type() != "tuntap" {
		return fmt.Errorf("netmgr: %s is a %s, not a tap; not deleting it", name, l.Type())
	}
	if err := h.LinkDel(l); err != nil && !isNotFound(err) {
		return fmt.Errorf("netmgr: cannot delete tap %s: %w", name, err)
	}
	return nil
}

// DeleteBridge removes the bridge name and the taps on it whose names
// start with tapPrefix. A bridge that is already gone is not an error; a
// link of that name that is not a bridge is refused. Other ports of the
// bridge are left alone (the kernel detaches them with the bridge).
func DeleteBridge(h *netlink.Handle, name, tapPrefix string) error {
	br, err := h.LinkByName(name)
	if isNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("netmgr: cannot look up bridge %s: %w", name, err)
	}
	if br.Type() != "bridge" {
		return fmt.Errorf("netmgr: %s is a %s, not a bridge; not deleting it", name, br.Type())
	}
	links, err := h.LinkList()
	if err != nil {
		return fmt.Errorf("netmgr: cannot list links: %w", err)
	}
	for _, l := range links {
		if tapPrefix != "" && l.Attrs().MasterIndex == br.Attrs().Index && l.Type() == "tuntap" && strings.HasPrefix(l.Attrs().Name, tapPrefix) {
			if err := DeleteTap(h, l.Attrs().Name); err != nil {
				return err
			}
		}
	}
	if err := h.LinkDel(br); err != nil && !isNotFound(err) {
		return fmt.Errorf("netmgr: cannot delete bridge %s: %w", name, err)
	}
	return nil
}

// EnableIPForward turns net.ipv4.ip_forward on in the network namespace
// ns (a negative handle: the caller's own), writing only when it is off.
func EnableIPForward(ns netns.NsHandle) error {
	return runIn(ns, func() error {
		_, err := setSysctl("net/ipv4/ip_forward", "1")
		return err
	})
}
