package privhelper

import (
	"bufio"
	"bytes"
	"io"
	"net/netip"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
)

func bytesReader(b []byte) io.Reader { return bytes.NewReader(b) }

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
		BridgePrefix: "banger", TapPrefix: "bgtap"}
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

// checkPath resolves symlinks and accepts only a path inside the caller's
// state dir.
func (p Policy) checkPath(uid uint32, path string) (string, error) {
	if !filepath.IsAbs(path) {
		return "", invalid("path %q is not absolute", path)
	}
	dir, err := p.stateDir(uid)
	if err != nil {
		return "", denied("no state dir known for uid %d: %v", uid, err)
	}
	realDir, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return "", denied("state dir %s of uid %d: %v", dir, uid, err)
	}
	real, err := filepath.EvalSymlinks(path)
	if err != nil {
		return "", invalid("path %s: %v", path, err)
	}
	rel, err := filepath.Rel(realDir, real)
	if err != nil || rel == "." || rel == ".." || strings.HasPrefix(rel, "../") {
		return "", denied("path %s (really %s) is outside the caller's state dir %s", path, real, realDir)
	}
	return real, nil
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

// checkLoop accepts only /dev/loopN.
func checkLoop(dev string) error {
	n, ok := strings.CutPrefix(dev, "/dev/loop")
	if !ok {
		return invalid("device %q is not a loop device", dev)
	}
	if _, err := strconv.Atoi(n); err != nil {
		return invalid("device %q is not a loop device", dev)
	}
	return nil
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
