package privhelperd

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"banger/internal/daemon/dmsnap"
	"banger/internal/daemon/privhelper"
	"banger/internal/daemon/privops"
)

// fields lists the request fields that are set, by their JSON names.
func fields(r privhelper.Request) map[string]bool {
	return map[string]bool{"bridge": r.Bridge != "", "subnet": r.Subnet != "", "tap_prefix": r.TapPrefix != "",
		"table": r.Table != "", "tap": r.Tap != "", "vm_id": r.VMID != "", "host_port": r.HostPort != 0,
		"guest": r.Guest != "", "name": r.Name != "", "origin": r.Origin != "", "cow_file": r.COWFile != "",
		"cow_size": r.COWSize != 0, "dns_port": r.DNSPort != 0}
}

var networkFields = []string{"bridge", "subnet", "tap_prefix", "table", "dns_port"}

// takes maps each op to the fields it takes; any other set field is
// refused.
var takes = map[string][]string{
	privhelper.OpHello:              nil,
	privhelper.OpEnsureNetwork:      networkFields,
	privhelper.OpTeardownNetwork:    networkFields,
	privhelper.OpCreateTap:          append([]string{"tap"}, networkFields...),
	privhelper.OpDeleteTap:          append([]string{"tap"}, networkFields...),
	privhelper.OpPublish:            append([]string{"vm_id", "host_port", "guest"}, networkFields...),
	privhelper.OpUnpublish:          append([]string{"vm_id", "host_port"}, networkFields...),
	privhelper.OpSnapshotsAvailable: nil,
	privhelper.OpCreateSnapshot:     {"name", "origin", "cow_file", "cow_size"},
	privhelper.OpRemoveSnapshot:     {"name"},
	privhelper.OpListSnapshots:      nil,
}

// request is one checked request of one caller, on its way to the
// executor's view for that caller.
type request struct {
	privhelper.Request
	uid  uint32
	ops  privops.Ops
	spec privops.NetSpec // the network ops': the network, checked
	home callerDir       // the file ops' and hello's: the caller's state dir
}

// done is the answer to a request the executor did: its error as the
// protocol's *Error (CodeFailed unless it is one already), or none.
func done(err error) (privhelper.Response, error) {
	if err == nil {
		return privhelper.Response{}, nil
	}
	var e *privhelper.Error
	if errors.As(err, &e) {
		return privhelper.Response{}, e
	}
	return privhelper.Response{}, &privhelper.Error{Code: privhelper.CodeFailed, Msg: err.Error()}
}

// dispatch checks r against the policy (the op, its fields, its network
// and tap) and hands it to the handler of its op.
func (s *Server) dispatch(ctx context.Context, uid uint32, r privhelper.Request) (privhelper.Response, error) {
	p := s.Policy
	allowed, known := takes[r.Op]
	if !known {
		return privhelper.Response{}, invalid("unknown operation %q", r.Op)
	}
	for f, set := range fields(r) {
		if set && !slices.Contains(allowed, f) {
			return privhelper.Response{}, invalid("%s does not take %q", r.Op, f)
		}
	}
	req := request{Request: r, uid: uid}
	if slices.Contains(allowed, "bridge") {
		var err error
		if req.spec, err = p.checkNetwork(uid, r); err != nil {
			return privhelper.Response{}, err
		}
	}
	if r.Op == privhelper.OpCreateTap || r.Op == privhelper.OpDeleteTap {
		if !strings.HasPrefix(r.Tap, r.TapPrefix) {
			return privhelper.Response{}, denied("tap %q is not banger's: its name must start with %q", r.Tap, r.TapPrefix)
		}
		if err := checkIfName("tap", r.Tap, p.TapPrefix); err != nil {
			return privhelper.Response{}, err
		}
	}
	// The caller's state dir, resolved once for the requests that look
	// at files.
	switch r.Op {
	case privhelper.OpHello, privhelper.OpCreateSnapshot, privhelper.OpRemoveSnapshot, privhelper.OpListSnapshots:
		req.home = p.home(uid)
	}
	req.ops = s.Exec.For(uid)
	switch r.Op {
	case privhelper.OpHello:
		// The state dir tells the caller where the helper accepts its
		// files; "" when the caller has none the helper knows of.
		return privhelper.Response{Version: s.Version, Protocol: privhelper.ProtocolVersion, StateDir: req.home.real}, nil
	case privhelper.OpEnsureNetwork:
		return done(req.ops.EnsureNetwork(ctx, req.spec))
	case privhelper.OpTeardownNetwork:
		return done(req.ops.TeardownNetwork(ctx, req.spec))
	case privhelper.OpCreateTap:
		return done(req.ops.CreateTap(ctx, req.spec, r.Tap))
	case privhelper.OpDeleteTap:
		return done(req.ops.DeleteTap(ctx, req.spec, r.Tap))
	case privhelper.OpPublish, privhelper.OpUnpublish:
		return req.publish(ctx)
	case privhelper.OpSnapshotsAvailable:
		resp := privhelper.Response{}
		if err := req.ops.SnapshotsAvailable(ctx); err != nil {
			resp.Reason = err.Error()
		}
		return resp, nil
	case privhelper.OpCreateSnapshot:
		return req.createSnapshot(ctx)
	case privhelper.OpRemoveSnapshot:
		return req.removeSnapshot(ctx)
	case privhelper.OpListSnapshots:
		return req.listSnapshots(ctx)
	}
	return privhelper.Response{}, invalid("unknown operation %q", r.Op)
}

// publish does publish and unpublish: a VM of banger's, an unprivileged
// host port (root may use any), a guest inside the network's subnet.
func (r request) publish(ctx context.Context) (privhelper.Response, error) {
	if err := checkVMID(r.VMID); err != nil {
		return privhelper.Response{}, err
	}
	if r.HostPort < 0 || r.HostPort > 65535 || (r.Op == privhelper.OpPublish && r.HostPort == 0) {
		return privhelper.Response{}, invalid("host port %d is not 1 to 65535", r.HostPort)
	}
	if r.Op == privhelper.OpUnpublish {
		return done(r.ops.Unpublish(ctx, r.spec, r.VMID, uint16(r.HostPort)))
	}
	if r.HostPort < 1024 && r.uid != 0 {
		return privhelper.Response{}, denied("host port %d is privileged (below 1024); publish a port from 1024 up", r.HostPort)
	}
	guest, err := netip.ParseAddrPort(r.Guest)
	if err != nil || !guest.Addr().Is4() || guest.Port() == 0 {
		return privhelper.Response{}, invalid("guest %q is not IPv4-ADDRESS:PORT", r.Guest)
	}
	if !r.spec.Subnet.Contains(guest.Addr()) {
		return privhelper.Response{}, denied("guest address %s is outside the network's subnet %s", guest.Addr(), r.spec.Subnet)
	}
	return done(r.ops.Publish(ctx, r.spec, privops.Publish{VMID: r.VMID, HostPort: uint16(r.HostPort), Guest: guest}))
}

// checkSnapshotName accepts a dm name of banger's that is the caller's:
// device-mapper names are one namespace for the whole host, so a user
// names snapshots under their uid, and nobody can take (or remove) the
// name another user's VM will need. what says what the name is of.
func (r request) checkSnapshotName(what string) error {
	if err := dmsnap.ValidName(r.Name); err != nil {
		return invalid("%v", err)
	}
	if want := privhelper.SnapshotPrefix(r.uid); r.uid != 0 && !strings.HasPrefix(r.Name, want) {
		return denied("%s must start with %q", what, want)
	}
	return nil
}

// createSnapshot opens the origin and the COW file as the caller's
// (making a new COW file when there is none) and hands the open files,
// not the paths, to the executor: what was checked is what gets attached.
func (r request) createSnapshot(ctx context.Context) (privhelper.Response, error) {
	if err := r.checkSnapshotName(fmt.Sprintf("snapshot name %q", r.Name)); err != nil {
		return privhelper.Response{}, err
	}
	origin, err := r.home.openOwned(r.Origin, os.O_RDONLY)
	if err != nil {
		return privhelper.Response{}, err
	}
	defer origin.Close()
	// A new COW file is made (O_EXCL, in a directory of the caller's);
	// one that is there already is opened and checked like the origin.
	// Without a usable size only an existing one will do.
	var cow, cowDir *os.File // cowDir: the new file's directory, when the helper made it
	err = errExists
	if r.COWSize >= dmsnap.MinCOWSize {
		cow, cowDir, err = r.home.createOwned(r.COWFile, r.COWSize)
	}
	if errors.Is(err, errExists) {
		cow, err = r.home.openOwned(r.COWFile, os.O_RDWR)
		if errors.Is(err, errMissing) && r.COWSize < dmsnap.MinCOWSize {
			return privhelper.Response{}, invalid("cow_size %d is below the minimum %d bytes for a new COW file", r.COWSize, dmsnap.MinCOWSize)
		}
	}
	if err != nil {
		return privhelper.Response{}, err
	}
	if cowDir != nil {
		defer cowDir.Close()
	}
	defer cow.Close()
	snap, err := r.ops.CreateSnapshot(ctx, r.Name, fdPath(origin), fdPath(cow), r.COWSize)
	if err != nil {
		if cowDir != nil {
			_ = unix.Unlinkat(int(cowDir.Fd()), filepath.Base(cow.Name()), 0)
		}
		return done(err)
	}
	// Answer with the files that were checked, not the fd paths.
	snap.Origin, snap.COWFile = origin.Name(), cow.Name()
	return privhelper.Response{Snapshots: []privhelper.SnapshotInfo{privhelper.SnapshotInfo(snap)}}, nil
}

// removeSnapshot removes a snapshot of the caller's: its name first (a
// snapshot of another user's made between the listing and the removal
// must not be the caller's to remove), then its COW file's place.
func (r request) removeSnapshot(ctx context.Context) (privhelper.Response, error) {
	if err := r.checkSnapshotName(fmt.Sprintf("snapshot %s is not the caller's: its name", r.Name)); err != nil {
		return privhelper.Response{}, err
	}
	all, err := r.ops.ListSnapshots(ctx)
	if err != nil {
		return done(err)
	}
	for _, sn := range all {
		if sn.Name == r.Name && !r.home.owns(sn) {
			return privhelper.Response{}, denied("snapshot %s is not the caller's: its changes live in %s, outside the caller's state dir", sn.Name, sn.COWFile)
		}
	}
	return done(r.ops.RemoveSnapshot(ctx, r.Name))
}

// listSnapshots lists the snapshots whose COW file is in the caller's
// state dir.
func (r request) listSnapshots(ctx context.Context) (privhelper.Response, error) {
	all, err := r.ops.ListSnapshots(ctx)
	if err != nil {
		return done(err)
	}
	resp := privhelper.Response{}
	for _, sn := range all {
		if r.home.owns(sn) {
			resp.Snapshots = append(resp.Snapshots, privhelper.SnapshotInfo(sn))
		}
	}
	return resp, nil
}

// owns says whether a snapshot's COW file is in the caller's state dir.
func (h callerDir) owns(s privops.Snapshot) bool {
	return h.err == nil && s.COWFile != "" && under(h.real, s.COWFile)
}

func fdPath(f *os.File) string { return "/proc/self/fd/" + strconv.Itoa(int(f.Fd())) }

// under reports whether path lies strictly inside dir (both cleaned).
func under(dir, path string) bool {
	rel, err := filepath.Rel(dir, path)
	return err == nil && rel != "." && rel != ".." && !strings.HasPrefix(rel, "../")
}
