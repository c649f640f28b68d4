package privops

import (
	"context"
	"net/netip"
)

// Ops is everything bangerd needs root for.
type Ops interface {
	Network
	Disks
}

// NetSpec names one bridged network: the objects every Network call acts
// on. The helper checks each field against its policy on every request.
type NetSpec struct {
	Bridge    string       // bridge name
	Subnet    netip.Prefix // the bridge's subnet; its first host address is the gateway
	TapPrefix string       // every tap of this network starts with it
	Table     string       // the nftables table (family ip) of this network
	// DNSPort, when not 0, is where the network's DNS responder listens on
	// the gateway instead of port 53 (a user's bangerd cannot bind 53):
	// guests' queries to the gateway's port 53 are redirected there.
	DNSPort uint16
}

// Gateway is the bridge's own address: the subnet's first host address.
func (n NetSpec) Gateway() netip.Addr { return n.Subnet.Addr().Next() }

// Publish forwards TCP HostPort on the host's local addresses to Guest.
type Publish struct {
	VMID     string
	HostPort uint16
	Guest    netip.AddrPort
}

// Network is the privileged half of VM networking. Every call is
// idempotent: repeating it changes nothing more.
type Network interface {
	// EnsureNetwork brings up the bridge with the gateway address, the
	// NAT and forward rules of the table, and ip_forward (remembering its
	// old value where it can put it back).
	EnsureNetwork(ctx context.Context, n NetSpec) error
	// TeardownNetwork removes the table, the network's taps and the bridge.
	// After the host's last banger bridge of any user it puts ip_forward
	// back to what it was before banger turned it on. A network that is
	// not there is not an error.
	TeardownNetwork(ctx context.Context, n NetSpec) error
	// CreateTap makes tap (which starts with n.TapPrefix) on the bridge,
	// up and owned by the caller, so the caller's VMM can open it.
	CreateTap(ctx context.Context, n NetSpec, tap string) error
	// DeleteTap removes tap; a missing tap is not an error.
	DeleteTap(ctx context.Context, n NetSpec, tap string) error
	// Publish adds p; a host port published for another VM is refused.
	Publish(ctx context.Context, n NetSpec, p Publish) error
	// Unpublish removes vmID's published hostPort, or all of its ports
	// when hostPort is 0.
	Unpublish(ctx context.Context, n NetSpec, vmID string, hostPort uint16) error
}

// Snapshot is a live copy-on-write snapshot of an image file.
type Snapshot struct {
	Name    string // device-mapper name, starting with dmsnap's prefix
	Device  string // the block device the VMM opens
	Origin  string // the image file under it, read-only
	COWFile string // the file that holds the VM's changes
	Sectors uint64 // size in 512-byte sectors
}

// Disks is the privileged half of copy-on-write root disks.
type Disks interface {
	// SnapshotsAvailable says why snapshots cannot be made here, or nil.
	SnapshotsAvailable(ctx context.Context) error
	// CreateSnapshot makes the snapshot name of origin with its changes in
	// cowFile (created sparse at cowSize bytes when missing, reused when
	// present). The device belongs to the caller.
	CreateSnapshot(ctx context.Context, name, origin, cowFile string, cowSize int64) (Snapshot, error)
	// RemoveSnapshot tears the snapshot down; its files stay. A missing
	// snapshot is not an error.
	RemoveSnapshot(ctx context.Context, name string) error
	// ListSnapshots lists the caller's snapshots.
	ListSnapshots(ctx context.Context) ([]Snapshot, error)
}
