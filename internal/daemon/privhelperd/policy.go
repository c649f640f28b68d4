package privhelperd

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"banger/internal/daemon/netmgr"
	"banger/internal/daemon/privhelper"
	"banger/internal/daemon/privops"
)

// Policy is what the helper allows, from its own config (root-owned).
type Policy struct {
	// AllowedUIDs may call the helper at all.
	AllowedUIDs map[uint32]bool
	// SubnetRange holds every subnet a caller may put on a bridge.
	SubnetRange netip.Prefix
	// BridgePrefix and TapPrefix start every interface name the helper
	// creates or deletes.
	BridgePrefix, TapPrefix string
	// StateDir returns the state dir of a caller; paths in requests must be
	// inside it. nil means <home>/.local/state/banger from the passwd entry.
	StateDir func(uid uint32) (string, error)
}

// DefaultPolicy allows the given users with banger's prefixes and range.
func DefaultPolicy(uids ...uint32) Policy {
	p := Policy{AllowedUIDs: map[uint32]bool{}, SubnetRange: netip.MustParsePrefix("10.200.0.0/16"),
		BridgePrefix: "banger", TapPrefix: netmgr.DefaultTapPrefix}
	for _, u := range uids {
		p.AllowedUIDs[u] = true
	}
	return p
}

func (p Policy) stateDir(uid uint32) (string, error) {
	if p.StateDir != nil {
		return p.StateDir(uid)
	}
	u, err := user.LookupId(strconv.FormatUint(uint64(uid), 10))
	if err != nil {
		return "", err
	}
	return filepath.Join(u.HomeDir, ".local", "state", "banger"), nil
}

// checkIfName accepts only interface names of banger's with the prefix.
func checkIfName(kind, name, prefix string) error {
	if name == "" {
		return invalid("%s name is empty", kind)
	}
	if len(name) > 15 {
		return invalid("%s name %q is longer than 15 bytes", kind, name)
	}
	if !strings.HasPrefix(name, prefix) {
		return denied("%s %q is not banger's: its name must start with %q", kind, name, prefix)
	}
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return invalid("%s name %q has %q; use lowercase letters, digits, '-' and '_'", kind, name, r)
		}
	}
	return nil
}

// callerDir is a caller's state dir as the helper resolved it for one
// request.
type callerDir struct {
	uid  uint32
	dir  string // as the policy names it
	real string // dir with every symlink resolved; "" when err is set
	err  error  // why the caller has no state dir, as a refusal
}

// home resolves uid's state dir. A state dir that is a symlink to "/" or
// to another user's directory must not make their files the caller's, so
// it must resolve to a directory that uid owns.
func (p Policy) home(uid uint32) callerDir {
	h := callerDir{uid: uid}
	dir, err := p.stateDir(uid)
	if err != nil {
		h.err = denied("no state dir known for uid %d: %v", uid, err)
		return h
	}
	h.dir = dir
	real, err := filepath.EvalSymlinks(dir)
	if err != nil {
		h.err = denied("state dir %s of uid %d cannot be resolved", dir, uid)
		return h
	}
	var st unix.Stat_t
	if err := unix.Stat(real, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFDIR || st.Uid != uid {
		h.err = denied("state dir %s of uid %d is not a directory of that user's", dir, uid)
		return h
	}
	h.real = real
	return h
}

// checkPath resolves symlinks and accepts only a path inside the caller's
// state dir.
func (h callerDir) checkPath(path string) (string, error) {
	if !filepath.IsAbs(path) {
		return "", invalid("path %q is not absolute", path)
	}
	if h.err != nil {
		return "", h.err
	}
	// Nothing outside the state dir is looked at, and every failure to
	// resolve reads the same: the helper, as root, must not tell a caller
	// what exists where the caller cannot look.
	clean := filepath.Clean(path)
	if !under(h.dir, clean) && !under(h.real, clean) {
		return "", denied("path %s is outside the caller's state dir %s", path, h.real)
	}
	real, err := filepath.EvalSymlinks(clean)
	if err != nil || !under(h.real, real) {
		e := denied("path %s does not exist, or is outside the caller's state dir %s", path, h.real)
		if err != nil {
			return "", missingPath{e}
		}
		return "", e
	}
	return real, nil
}

// errMissing is what a missingPath is: errors.Is(err, errMissing) says
// that the path did not resolve (the helper does not tell the caller more).
var errMissing = errors.New("path does not resolve")

// missingPath is the refusal of a path that did not resolve: the caller
// is told only that it is refused, the helper itself can tell why.
type missingPath struct{ refusal *privhelper.Error }

func (m missingPath) Error() string        { return m.refusal.Error() }
func (m missingPath) Unwrap() error        { return m.refusal }
func (m missingPath) Is(target error) bool { return target == errMissing }

func parseSubnet(s string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(s)
	if err != nil || !p.Addr().Is4() || p != p.Masked() {
		return netip.Prefix{}, invalid("subnet %q is not an IPv4 network address with a prefix length", s)
	}
	return p, nil
}

func (p Policy) checkSubnet(s string) (netip.Prefix, error) {
	pre, err := parseSubnet(s)
	if err != nil {
		return pre, err
	}
	if !p.SubnetRange.Contains(pre.Addr()) || pre.Bits() < p.SubnetRange.Bits() {
		return pre, denied("subnet %s is outside the allowed range %s", pre, p.SubnetRange)
	}
	return pre, nil
}

// checkNetwork accepts only a network of banger's: a bridge and taps with
// banger's prefixes, the table that belongs to the bridge, and a subnet in
// the range.
func (p Policy) checkNetwork(uid uint32, r privhelper.Request) (privops.NetSpec, error) {
	if err := checkIfName("bridge", r.Bridge, p.BridgePrefix); err != nil {
		return privops.NetSpec{}, err
	}
	if err := checkIfName("tap prefix", r.TapPrefix, p.TapPrefix); err != nil {
		return privops.NetSpec{}, err
	}
	if len(r.TapPrefix) > 7 {
		return privops.NetSpec{}, invalid("tap prefix %q is longer than 7 bytes", r.TapPrefix)
	}
	if strings.HasPrefix(r.Bridge, r.TapPrefix) {
		return privops.NetSpec{}, invalid("bridge %q starts with the tap prefix %q", r.Bridge, r.TapPrefix)
	}
	if want := netmgr.TableFor(r.Bridge); r.Table != want {
		return privops.NetSpec{}, denied("nftables table %q is not the table of bridge %s (%q)", r.Table, r.Bridge, want)
	}
	sub, err := p.checkSubnet(r.Subnet)
	if err != nil {
		return privops.NetSpec{}, err
	}
	if sub.Bits() > 30 {
		return privops.NetSpec{}, invalid("subnet %s is narrower than /30", sub)
	}
	if sub.Bits() < 24 && uid != 0 {
		// One user must not take the whole range from the others.
		return privops.NetSpec{}, denied("subnet %s is wider than a /24; use a /24 or narrower", sub)
	}
	if r.DNSPort < 0 || r.DNSPort > 65535 {
		return privops.NetSpec{}, invalid("dns_port %d is not 0 to 65535", r.DNSPort)
	}
	if r.DNSPort != 0 && r.DNSPort < 1024 && uid != 0 {
		return privops.NetSpec{}, denied("dns_port %d is privileged (below 1024); use a port from 1024 up", r.DNSPort)
	}
	return privops.NetSpec{Bridge: r.Bridge, Subnet: sub, TapPrefix: r.TapPrefix, Table: r.Table, DNSPort: uint16(r.DNSPort)}, nil
}

// checkVMID accepts a VM id of banger's: 1 to 64 lowercase letters and
// digits.
func checkVMID(id string) error {
	if id == "" || len(id) > 64 {
		return invalid("vm id %q is empty or longer than 64 bytes", id)
	}
	for _, r := range id {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9') {
			return invalid("vm id %q has %q; banger's ids are lowercase letters and digits", id, r)
		}
	}
	return nil
}

// underDir reports whether the open file f is (still) inside dir, by the
// kernel's own name for it: a directory swapped for a symlink after the
// path was checked is caught here.
func underDir(f *os.File, dir string) bool {
	real, err := os.Readlink(fdPath(f))
	return err == nil && under(dir, real)
}

// openOwned opens a regular file of the caller's inside their state dir
// (every symlink resolved first, then the resolved path opened without
// following a symlink there) and checks, on the open file,
// that it is still there and belongs to the caller.
func (h callerDir) openOwned(path string, flag int) (*os.File, error) {
	real, err := h.checkPath(path)
	if err != nil {
		return nil, err
	}
	uid, dir := h.uid, h.real
	f, err := os.OpenFile(real, flag|unix.O_NOFOLLOW|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, invalid("open %s: %v", path, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		f.Close()
		return nil, invalid("stat %s: %v", path, err)
	}
	switch {
	case st.Mode&unix.S_IFMT != unix.S_IFREG:
		f.Close()
		return nil, invalid("%s is not a regular file", path)
	case st.Uid != uid:
		f.Close()
		return nil, denied("%s belongs to uid %d, not the caller (%d)", path, st.Uid, uid)
	case !underDir(f, dir):
		f.Close()
		return nil, denied("path %s moved out of the caller's state dir %s", path, dir)
	}
	return f, nil
}

// errExists says that createOwned found the name taken.
var errExists = errors.New("exists")

// createOwned makes a new file, sparse at size bytes, owned by the caller,
// in a directory inside their state dir. It refuses a name that exists.
// It also returns that directory, open, so that the caller can remove the
// file again by its name there (unix.Unlinkat), never by a path that the
// caller of the helper could have re-pointed in the meantime.
func (h callerDir) createOwned(path string, size int64) (*os.File, *os.File, error) {
	if !filepath.IsAbs(path) {
		return nil, nil, invalid("path %q is not absolute", path)
	}
	base := filepath.Base(path)
	if base == "." || base == ".." || base == "/" {
		return nil, nil, invalid("path %q names no file", path)
	}
	parent, err := h.checkPath(filepath.Dir(path))
	if err != nil {
		return nil, nil, err
	}
	uid, dir := h.uid, h.real
	d, err := os.OpenFile(parent, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, nil, invalid("open directory %s: %v", filepath.Dir(path), err)
	}
	keep := false
	defer func() {
		if !keep {
			d.Close()
		}
	}()
	var st unix.Stat_t
	if err := unix.Fstat(int(d.Fd()), &st); err != nil || st.Uid != uid {
		return nil, nil, denied("directory %s does not belong to the caller (%d)", filepath.Dir(path), uid)
	}
	if !underDir(d, dir) {
		return nil, nil, denied("directory %s moved out of the caller's state dir %s", filepath.Dir(path), dir)
	}
	fd, err := unix.Openat(int(d.Fd()), base, unix.O_RDWR|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if errors.Is(err, unix.EEXIST) {
		return nil, nil, errExists
	}
	if err != nil {
		return nil, nil, invalid("create %s: %v", path, err)
	}
	f := os.NewFile(uintptr(fd), filepath.Join(parent, base))
	fail := func(e error) (*os.File, *os.File, error) {
		_ = unix.Unlinkat(int(d.Fd()), base, 0)
		f.Close()
		return nil, nil, e
	}
	if err := f.Chown(int(uid), primaryGID(uid)); err != nil {
		return fail(&privhelper.Error{Code: privhelper.CodeFailed, Msg: fmt.Sprintf("give %s to uid %d: %v", path, uid, err)})
	}
	if err := f.Truncate(size); err != nil {
		return fail(&privhelper.Error{Code: privhelper.CodeFailed, Msg: fmt.Sprintf("size %s to %d bytes: %v", path, size, err)})
	}
	keep = true
	return f, d, nil
}

// LoadAllowedUsers reads user names or uids, one a line ('#' comments), as
// the helper's allow list.
func LoadAllowedUsers(r io.Reader) (map[uint32]bool, error) {
	out := map[uint32]bool{}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := strings.TrimSpace(strings.SplitN(sc.Text(), "#", 2)[0])
		if line == "" {
			continue
		}
		if n, err := strconv.ParseUint(line, 10, 32); err == nil {
			out[uint32(n)] = true
			continue
		}
		u, err := user.Lookup(line)
		if err != nil {
			return nil, err
		}
		n, _ := strconv.ParseUint(u.Uid, 10, 32)
		out[uint32(n)] = true
	}
	return out, sc.Err()
}

// ReadAllowedUsersFile is LoadAllowedUsers on a file.
func ReadAllowedUsersFile(path string) (map[uint32]bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return LoadAllowedUsers(f)
}
