package netmgr

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
)

// Leases keeps which VM holds which IPv4 address. The daemon backs it with
// its store; MemLeases is an in-memory implementation for tests.
type Leases interface {
	// Acquire returns vmID's address. When vmID already holds one it is
	// returned unchanged and pick is not called; otherwise pick is called
	// with every address currently leased and its choice is recorded. The
	// whole call is atomic: two concurrent calls never lease one address
	// twice.
	Acquire(ctx context.Context, vmID string, pick func(used []netip.Addr) (netip.Addr, error)) (netip.Addr, error)
	// Release forgets vmID's lease; releasing a VM without one is not an
	// error.
	Release(ctx context.Context, vmID string) error
	// List returns every lease, by VM id.
	List(ctx context.Context) (map[string]netip.Addr, error)
}

// MemLeases is a Leases held in memory, safe for concurrent use.
type MemLeases struct {
	mu sync.Mutex
	m  map[string]netip.Addr
}

// NewMemLeases returns an empty MemLeases.
func NewMemLeases() *MemLeases { return &MemLeases{m: map[string]netip.Addr{}} }

// Acquire implements Leases.
func (l *MemLeases) Acquire(ctx context.Context, vmID string, pick func([]netip.Addr) (netip.Addr, error)) (netip.Addr, error) {
	if err := ctx.Err(); err != nil {
		return netip.Addr{}, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if a, ok := l.m[vmID]; ok {
		return a, nil
	}
	used := make([]netip.Addr, 0, len(l.m))
	for _, a := range l.m {
		used = append(used, a)
	}
	a, err := pick(used)
	if err != nil {
		return netip.Addr{}, err
	}
	for id, b := range l.m {
		if b == a {
			return netip.Addr{}, fmt.Errorf("netmgr: address %s picked for VM %s is already leased to VM %s", a, vmID, id)
		}
	}
	l.m[vmID] = a
	return a, nil
}

// Release implements Leases.
func (l *MemLeases) Release(ctx context.Context, vmID string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.m, vmID)
	return nil
}

// List implements Leases.
func (l *MemLeases) List(ctx context.Context) (map[string]netip.Addr, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make(map[string]netip.Addr, len(l.m))
	for k, v := range l.m {
		out[k] = v
	}
	return out, nil
}

// PickFree returns the lowest address of subnet that is not the network
// address, the gateway (the first host address), the broadcast address or
// in used. It is the pick function Attach hands to Leases.Acquire.
func PickFree(subnet netip.Prefix, used []netip.Addr) (netip.Addr, error) {
	subnet = subnet.Masked()
	if !subnet.Addr().Is4() || subnet.Bits() > 30 {
		return netip.Addr{}, fmt.Errorf("netmgr: subnet %s has no room for VMs; use an IPv4 subnet of /30 or larger", subnet)
	}
	taken := make(map[netip.Addr]bool, len(used))
	for _, a := range used {
		taken[a] = true
	}
	gw := subnet.Addr().Next()
	bcast := lastAddr(subnet)
	for a := gw.Next(); a.IsValid() && a != bcast; a = a.Next() {
		if !taken[a] {
			return a, nil
		}
	}
	return netip.Addr{}, fmt.Errorf("netmgr: no free address left in %s (%d leased); remove VMs or set a larger bridge_subnet", subnet, len(used))
}

// lastAddr is the broadcast address of an IPv4 prefix.
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().As4()
	host := uint32(1)<<(32-p.Bits()) - 1
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	v |= host
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}
