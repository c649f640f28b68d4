package privhelperd

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"banger/internal/daemon/dmsnap"
	"banger/internal/daemon/privhelper"
	"banger/internal/daemon/privops"
)

// writeResponse sends one answer; a caller that went away is not the
// helper's problem.
func writeResponse(w io.Writer, r privhelper.Response) { _ = json.NewEncoder(w).Encode(r) }

// denied and invalid are the protocol's refusals, short.
var denied, invalid = privhelper.Denied, privhelper.Invalid

// Executor does the privileged work. The helper asks it for the view of
// the calling user, and only with requests that passed the policy.
type Executor interface {
	For(uid uint32) privops.Ops
}

// Server serves the helper socket.
type Server struct {
	Policy  Policy
	Exec    Executor
	Version string
	Log     *slog.Logger
}

// Listen opens the helper socket: its dir 0755, the socket 0666 (every
// caller is checked by SO_PEERCRED, so the mode is not the guard). The
// socket is bound under a temporary name, given its mode and then renamed
// into place, so that a user who connects the moment it appears is never
// refused for lack of write permission.
func Listen(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, err
	}
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return nil, errors.New("another banger helper already listens on " + path)
	}
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".new")
	_ = os.Remove(tmp)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: tmp, Net: "unix"})
	if err != nil {
		return nil, err
	}
	ln.SetUnlinkOnClose(false)
	if err := os.Chmod(tmp, 0o666); err != nil {
		ln.Close()
		os.Remove(tmp)
		return nil, err
	}
	if err := os.Rename(tmp, path); err != nil {
		ln.Close()
		os.Remove(tmp)
		return nil, err
	}
	fi, err := os.Lstat(path)
	if err != nil {
		ln.Close()
		return nil, err
	}
	return &socketListener{UnixListener: ln, path: path, file: fi}, nil
}

// socketListener removes the socket file it was renamed to on its first
// Close, and only while that path is still its socket: a helper started
// after this one may have bound the same path by then.
type socketListener struct {
	*net.UnixListener
	path string
	file os.FileInfo
	once sync.Once
}

func (l *socketListener) Close() error {
	err := l.UnixListener.Close()
	l.once.Do(func() {
		if fi, serr := os.Lstat(l.path); serr == nil && os.SameFile(fi, l.file) {
			_ = os.Remove(l.path)
		}
	})
	return err
}

// Limits that keep one caller from wedging the helper for the others.
const (
	maxConns       = 64               // connections served at once, in all
	maxConnsPerUID = 8                // of them, from one uid
	readTimeout    = 5 * time.Second  // to send the whole request
	requestTimeout = 2 * time.Minute  // to do it; then the request is cancelled
	writeTimeout   = 10 * time.Second // to take the answer
)

// Serve answers connections until ctx ends. Each connection carries one
// request and its answer. A caller not in the allow list is answered at
// once, before anything is read; a caller over its share of connections
// is told to retry. Temporary accept errors (out of file descriptors) are
// waited out, not fatal.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	log := s.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	go func() { <-ctx.Done(); ln.Close() }()
	var mu sync.Mutex
	total, perUID := 0, map[uint32]int{}
	backoff := 5 * time.Millisecond
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, unix.EMFILE) || errors.Is(err, unix.ENFILE) || errors.Is(err, unix.ENOBUFS) || errors.Is(err, unix.ENOMEM) {
				log.Warn("helper cannot accept a connection; waiting", "error", err, "wait", backoff)
				select {
				case <-ctx.Done():
					return nil
				case <-time.After(backoff):
				}
				backoff = min(2*backoff, time.Second)
				continue
			}
			return err
		}
		backoff = 5 * time.Millisecond
		uc := c.(*net.UnixConn)
		uid, err := peerUID(uc)
		if err != nil {
			refuse(uc, denied("cannot identify the caller: %v", err))
			continue
		}
		if !s.Policy.AllowedUIDs[uid] {
			log.Warn("helper request refused", "uid", uid, "reason", "uid not allowed")
			refuse(uc, denied("uid %d is not allowed to use the banger helper: add the user to its allow list", uid))
			continue
		}
		mu.Lock()
		busy := total >= maxConns || perUID[uid] >= maxConnsPerUID
		if !busy {
			total++
			perUID[uid]++
		}
		mu.Unlock()
		if busy {
			log.Warn("helper request refused", "uid", uid, "reason", "too many connections")
			refuse(uc, &privhelper.Error{Code: privhelper.CodeFailed, Msg: "the banger helper is serving too many requests (of this user, or in all); retry"})
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() {
				mu.Lock()
				total--
				if perUID[uid]--; perUID[uid] == 0 {
					delete(perUID, uid)
				}
				mu.Unlock()
			}()
			defer uc.Close()
			s.handle(ctx, uc, uid, log)
		}()
	}
}

// refuse answers a connection without reading its request, and closes it.
func refuse(c *net.UnixConn, e *privhelper.Error) {
	_ = c.SetWriteDeadline(time.Now().Add(time.Second))
	writeResponse(c, privhelper.ErrorResponse(e))
	c.Close()
}

func peerUID(c *net.UnixConn) (uint32, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return 0, err
	}
	var cred *unix.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return 0, err
	}
	if cerr != nil {
		return 0, cerr
	}
	return cred.Uid, nil
}

func (s *Server) handle(ctx context.Context, c *net.UnixConn, uid uint32, log *slog.Logger) {
	_ = c.SetReadDeadline(time.Now().Add(readTimeout))
	data, err := io.ReadAll(io.LimitReader(c, privhelper.MaxRequest+1))
	_ = c.SetWriteDeadline(time.Now().Add(requestTimeout + writeTimeout))
	if err != nil {
		writeResponse(c, privhelper.ErrorResponse(invalid("read request: %v", err)))
		return
	}
	req, err := privhelper.DecodeRequest(data)
	if err != nil {
		writeResponse(c, privhelper.ErrorResponse(err))
		return
	}
	rctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	resp, err := s.dispatch(rctx, uid, req)
	if err != nil {
		log.Warn("helper request refused or failed", "uid", uid, "op", req.Op, "error", err)
		writeResponse(c, privhelper.ErrorResponse(err))
		return
	}
	log.Info("helper request done", "uid", uid, "op", req.Op)
	resp.OK = true
	writeResponse(c, resp)
}

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
	fail := func(err error) (privhelper.Response, error) {
		if err == nil {
			return privhelper.Response{}, nil
		}
		var e *privhelper.Error
		if errors.As(err, &e) {
			return privhelper.Response{}, e
		}
		return privhelper.Response{}, &privhelper.Error{Code: privhelper.CodeFailed, Msg: err.Error()}
	}
	var spec privops.NetSpec
	if slices.Contains(allowed, "bridge") {
		var err error
		if spec, err = p.checkNetwork(uid, r); err != nil {
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
	var home callerDir
	if r.Op == privhelper.OpHello || r.Op == privhelper.OpCreateSnapshot || r.Op == privhelper.OpRemoveSnapshot || r.Op == privhelper.OpListSnapshots {
		home = p.home(uid)
	}
	ops := s.Exec.For(uid)
	switch r.Op {
	case privhelper.OpHello:
		// The state dir tells the caller where the helper accepts its
		// files; "" when the caller has none the helper knows of.
		return privhelper.Response{Version: s.Version, Protocol: privhelper.ProtocolVersion, StateDir: home.real}, nil
	case privhelper.OpEnsureNetwork:
		return fail(ops.EnsureNetwork(ctx, spec))
	case privhelper.OpTeardownNetwork:
		return fail(ops.TeardownNetwork(ctx, spec))
	case privhelper.OpCreateTap:
		return fail(ops.CreateTap(ctx, spec, r.Tap))
	case privhelper.OpDeleteTap:
		return fail(ops.DeleteTap(ctx, spec, r.Tap))
	case privhelper.OpPublish, privhelper.OpUnpublish:
		if err := checkVMID(r.VMID); err != nil {
			return privhelper.Response{}, err
		}
		if r.HostPort < 0 || r.HostPort > 65535 || (r.Op == privhelper.OpPublish && r.HostPort == 0) {
			return privhelper.Response{}, invalid("host port %d is not 1 to 65535", r.HostPort)
		}
		if r.Op == privhelper.OpUnpublish {
			return fail(ops.Unpublish(ctx, spec, r.VMID, uint16(r.HostPort)))
		}
		if r.HostPort < 1024 && uid != 0 {
			return privhelper.Response{}, denied("host port %d is privileged (below 1024); publish a port from 1024 up", r.HostPort)
		}
		guest, err := netip.ParseAddrPort(r.Guest)
		if err != nil || !guest.Addr().Is4() || guest.Port() == 0 {
			return privhelper.Response{}, invalid("guest %q is not IPv4-ADDRESS:PORT", r.Guest)
		}
		if !spec.Subnet.Contains(guest.Addr()) {
			return privhelper.Response{}, denied("guest address %s is outside the network's subnet %s", guest.Addr(), spec.Subnet)
		}
		return fail(ops.Publish(ctx, spec, privops.Publish{VMID: r.VMID, HostPort: uint16(r.HostPort), Guest: guest}))
	case privhelper.OpSnapshotsAvailable:
		resp := privhelper.Response{}
		if err := ops.SnapshotsAvailable(ctx); err != nil {
			resp.Reason = err.Error()
		}
		return resp, nil
	case privhelper.OpCreateSnapshot:
		if err := dmsnap.ValidName(r.Name); err != nil {
			return privhelper.Response{}, invalid("%v", err)
		}
		// Device-mapper names are one namespace for the whole host: a user
		// names snapshots under their uid, so that nobody can take the name
		// another user's VM will need.
		if want := privhelper.SnapshotPrefix(uid); uid != 0 && !strings.HasPrefix(r.Name, want) {
			return privhelper.Response{}, denied("snapshot name %q must start with %q", r.Name, want)
		}
		origin, err := home.openOwned(r.Origin, os.O_RDONLY)
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
			cow, cowDir, err = home.createOwned(r.COWFile, r.COWSize)
		}
		if errors.Is(err, errExists) {
			cow, err = home.openOwned(r.COWFile, os.O_RDWR)
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
		// The open files, not the paths, go to the executor: what was
		// checked is what gets attached.
		snap, err := ops.CreateSnapshot(ctx, r.Name, fdPath(origin), fdPath(cow), r.COWSize)
		if err != nil {
			if cowDir != nil {
				_ = unix.Unlinkat(int(cowDir.Fd()), filepath.Base(cow.Name()), 0)
			}
			return fail(err)
		}
		// Answer with the files that were checked, not the fd paths.
		snap.Origin, snap.COWFile = origin.Name(), cow.Name()
		return privhelper.Response{Snapshots: []privhelper.SnapshotInfo{privhelper.SnapshotInfo(snap)}}, nil
	case privhelper.OpRemoveSnapshot:
		if err := dmsnap.ValidName(r.Name); err != nil {
			return privhelper.Response{}, invalid("%v", err)
		}
		// The name first: a snapshot of another user's made between the
		// listing below and the removal must not be the caller's to remove.
		if want := privhelper.SnapshotPrefix(uid); uid != 0 && !strings.HasPrefix(r.Name, want) {
			return privhelper.Response{}, denied("snapshot %s is not the caller's: its name must start with %q", r.Name, want)
		}
		all, err := ops.ListSnapshots(ctx)
		if err != nil {
			return fail(err)
		}
		for _, sn := range all {
			if sn.Name == r.Name && !home.owns(sn) {
				return privhelper.Response{}, denied("snapshot %s is not the caller's: its changes live in %s, outside the caller's state dir", sn.Name, sn.COWFile)
			}
		}
		return fail(ops.RemoveSnapshot(ctx, r.Name))
	case privhelper.OpListSnapshots:
		all, err := ops.ListSnapshots(ctx)
		if err != nil {
			return fail(err)
		}
		resp := privhelper.Response{}
		for _, sn := range all {
			if home.owns(sn) {
				resp.Snapshots = append(resp.Snapshots, privhelper.SnapshotInfo(sn))
			}
		}
		return resp, nil
	}
	return privhelper.Response{}, invalid("unknown operation %q", r.Op)
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
