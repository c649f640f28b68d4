package privhelperd

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/user"
	"strconv"

	"github.com/vishvananda/netns"

	"banger/internal/daemon/dmsnap"
	"banger/internal/daemon/netmgr"
	"banger/internal/daemon/privops"
)

// SystemConfig configures a SystemExecutor.
type SystemConfig struct {
	// NetNS is the path of the network namespace to work in (tests use
	// one they made); "" is the process's own.
	NetNS string
	// LockDir is where the loop and device-mapper flock lives (see
	// dmsnap); "" means the process-wide lock alone.
	LockDir string
	// SysctlDir is where the values of the sysctls the executor turns on
	// (ip_forward) are remembered until the host's last banger bridge
	// goes and they are put back; "" means netmgr.DefaultSysctlDir.
	SysctlDir string
}

// SystemExecutor does the privileged work for real: links and nftables
// through netmlink (netmgr.Host), ip_forward through /proc/sys, loop
// devices and snapshots through dmsnap. For gives the view that acts for
// one user; a bangerd running as root uses For(its own uid) in-process,
// and the helper uses For(the caller's uid) for each request.
type SystemExecutor struct {
	host *netmgr.Host
	ns   netns.NsHandle // < 0: the process's own namespace
	dm   *dmsnap.Manager
}

// NewSystemExecutor opens a netlink socket in the configured namespace.
// It changes nothing on the host; Close releases the socket.
func NewSystemExecutor(cfg SystemConfig) (*SystemExecutor, error) {
	e := &SystemExecutor{ns: -1, dm: &dmsnap.Manager{LockDir: cfg.LockDir}}
	var err error
	sysctls := cfg.SysctlDir
	if sysctls == "" {
		sysctls = netmgr.DefaultSysctlDir
	}
	opts := []netmgr.HostOption{netmgr.RememberSysctlsIn(sysctls)}
	if cfg.NetNS != "" {
		if e.ns, err = netns.GetFromPath(cfg.NetNS); err != nil {
			return nil, fmt.Errorf("open the network namespace %s: %w", cfg.NetNS, err)
		}
		opts = append(opts, netmgr.InNetNS(e.ns))
	}
	// Without NetNS the Host works where the process is and never calls
	// setns(2), which the helper's unit forbids (RestrictNamespaces=yes).
	if e.host, err = netmgr.NewHost(opts...); err != nil {
		if e.ns >= 0 {
			e.ns.Close()
		}
		return nil, err
	}
	return e, nil
}

// Close releases the netlink socket and the namespace handle.
func (e *SystemExecutor) Close() error {
	e.host.Close()
	if e.ns >= 0 {
		return e.ns.Close()
	}
	return nil
}

// For returns the operations done on behalf of uid: its taps, its
// bridge, its published ports and its snapshots, which another uid's view
// refuses to touch.
func (e *SystemExecutor) For(uid uint32) privops.Ops {
	gid := primaryGID(uid)
	return &userOps{Network: e.host.As(int(uid), gid), dm: e.dm, uid: int(uid), gid: gid}
}

// userOps is one user's view of a SystemExecutor.
type userOps struct {
	privops.Network
	dm       *dmsnap.Manager
	uid, gid int
}

func (u *userOps) SnapshotsAvailable(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return dmsnap.Available()
}

// CreateSnapshot makes the snapshot and gives its device node to the user,
// so that the user's VMM can open it.
func (u *userOps) CreateSnapshot(ctx context.Context, name, origin, cowFile string, cowSize int64) (privops.Snapshot, error) {
	s, err := u.dm.Create(ctx, name, origin, cowFile, cowSize)
	if err != nil {
		return privops.Snapshot{}, err
	}
	if u.uid != os.Getuid() {
		if err := os.Chown(s.Device, u.uid, u.gid); err != nil {
			rerr := u.dm.Remove(context.WithoutCancel(ctx), name)
			return privops.Snapshot{}, errors.Join(fmt.Errorf("give %s to uid %d: %w", s.Device, u.uid, err), rerr)
		}
	}
	return privops.Snapshot{Name: s.Name, Device: s.Device, Origin: s.Origin, COWFile: s.COWFile, Sectors: s.Sectors}, nil
}

func (u *userOps) RemoveSnapshot(ctx context.Context, name string) error {
	return u.dm.Remove(ctx, name)
}

// ListSnapshots lists every banger snapshot on the host; the helper
// filters them down to the caller's.
func (u *userOps) ListSnapshots(ctx context.Context) ([]privops.Snapshot, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	ss, err := dmsnap.List()
	if err != nil {
		return nil, err
	}
	out := make([]privops.Snapshot, 0, len(ss))
	for _, s := range ss {
		out = append(out, privops.Snapshot{Name: s.Name, Device: s.Device, Origin: s.Origin, COWFile: s.COWFile, Sectors: s.Sectors})
	}
	return out, nil
}

// nogroup is the group of a user who has no passwd entry.
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
