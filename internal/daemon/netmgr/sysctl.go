package netmgr

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"banger/internal/atomicfile"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// DefaultSysctlDir is where a Host remembers the values of the sysctls it
// changed, so that the last teardown can put them back: under /run, so the
// memory survives a crash or restart of bangerd or the helper (and both
// share it) but not a reboot, which resets the sysctls too.
const DefaultSysctlDir = "/run/banger-sysctl"

// forwardKey is the one namespace-wide sysctl a Host turns on. The other
// one, route_localnet, is the bridge's own and goes with it.
const forwardKey = "net/ipv4/ip_forward"

// RememberSysctlsIn makes the Host remember in dir the value of every sysctl
// it changes (ip_forward), and put it back when it tears down the last
// banger bridge of the namespace. Without it the Host turns ip_forward on
// and never off.
func RememberSysctlsIn(dir string) HostOption { return func(h *Host) { h.sysctlDir = dir } }

// savedSysctls is the memory file of one network namespace.
type savedSysctls struct {
	// BootID and NetNS name the namespace the values were read in: a
	// namespace inode can be reused once its namespace is gone, so the
	// namespace cookie (never reused in a boot) is kept where the kernel
	// gives one.
	BootID   string `json:"boot_id"`
	NetNSIno uint64 `json:"netns_ino"`
	Cookie   uint64 `json:"netns_cookie,omitempty"`
	// Prev holds each changed sysctl's value from before banger changed
	// it, by /proc/sys path.
	Prev map[string]string `json:"previous"`
}

// nsIdentity identifies the Host's network namespace.
func (h *Host) nsIdentity() (savedSysctls, error) {
	var id savedSysctls
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return id, fmt.Errorf("netmgr: cannot read the boot id: %w", err)
	}
	id.BootID = strings.TrimSpace(string(b))
	err = runIn(h.ns, func() error {
		var st unix.Stat_t
		if err := unix.Stat("/proc/thread-self/ns/net", &st); err != nil {
			return fmt.Errorf("netmgr: cannot identify the network namespace: %w", err)
		}
		id.NetNSIno = st.Ino
		fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return nil
		}
		defer unix.Close(fd)
		const soNetNSCookie = 71 // SO_NETNS_COOKIE, Linux 5.14
		if c, err := unix.GetsockoptUint64(fd, unix.SOL_SOCKET, soNetNSCookie); err == nil {
			id.Cookie = c
		}
		return nil
	})
	return id, err
}

func (s savedSysctls) sameNS(o savedSysctls) bool {
	return s.BootID == o.BootID && s.NetNSIno == o.NetNSIno && s.Cookie == o.Cookie
}

// lockSysctls takes the memory directory's flock, shared with every other
// process (a root bangerd and the helper) that changes this host's
// sysctls, waiting at most until ctx ends or 10 s.
func (h *Host) lockSysctls(ctx context.Context) (unlock func(), err error) {
	if err := os.MkdirAll(h.sysctlDir, 0o755); err != nil {
		return nil, fmt.Errorf("netmgr: cannot make %s, where banger remembers the sysctls it changes: %w", h.sysctlDir, err)
	}
	d, err := os.Open(h.sysctlDir)
	if err != nil {
		return nil, fmt.Errorf("netmgr: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for {
		err := unix.Flock(int(d.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return func() { d.Close() }, nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) {
			d.Close()
			return nil, fmt.Errorf("netmgr: cannot lock %s: %w", h.sysctlDir, err)
		}
		select {
		case <-ctx.Done():
			d.Close()
			return nil, fmt.Errorf("netmgr: waiting for the lock of %s (another banger changing sysctls): %w", h.sysctlDir, context.Cause(ctx))
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func (h *Host) memoryPath(id savedSysctls) string {
	return filepath.Join(h.sysctlDir, "netns-"+strconv.FormatUint(id.NetNSIno, 10)+".json")
}

// readMemory returns the memory of id's namespace; ok is false when there
// is none, or only one left from another namespace or boot.
func (h *Host) readMemory(id savedSysctls) (s savedSysctls, ok bool, err error) {
	b, err := os.ReadFile(h.memoryPath(id))
	if errors.Is(err, os.ErrNotExist) {
		return s, false, nil
	}
	if err != nil {
		return s, false, fmt.Errorf("netmgr: cannot read the sysctls banger changed: %w", err)
	}
	if err := json.Unmarshal(b, &s); err != nil || !s.sameNS(id) || len(s.Prev) == 0 {
		return savedSysctls{}, false, nil // damaged or stale: nothing to restore
	}
	return s, true, nil
}

func (h *Host) writeMemory(s savedSysctls) error {
	b, err := json.Marshal(s)
	if err != nil {
		return err
	}
	path := h.memoryPath(s)
	if err := atomicfile.WriteFile(path, append(b, '\n'), atomicfile.Mode(0o600)); err != nil {
		return fmt.Errorf("netmgr: cannot remember the sysctls banger changes in %s: %w", h.sysctlDir, err)
	}
	return nil
}

// enableForward turns ip_forward on in the Host's namespace. When it was
// off and the Host has a memory directory, its old value is written there
// first, so that restoreForward can put it back even after a crash.
func (h *Host) enableForward(ctx context.Context) error {
	if h.sysctlDir == "" {
		return EnableIPForward(h.ns)
	}
	unlock, err := h.lockSysctls(ctx)
	if err != nil {
		return err
	}
	defer unlock()
	cur, err := readSysctlIn(h.ns, forwardKey)
	if err != nil || cur == "1" {
		return err
	}
	id, err := h.nsIdentity()
	if err != nil {
		return err
	}
	s, ok, err := h.readMemory(id)
	if err != nil {
		return err
	}
	if !ok {
		s = id
		s.Prev = map[string]string{}
	}
	if _, had := s.Prev[forwardKey]; !had {
		s.Prev[forwardKey] = cur
		if err := h.writeMemory(s); err != nil {
			return fmt.Errorf("%w; banger leaves ip_forward as it is (%s) rather than change what it could not put back", err, cur)
		}
	}
	return EnableIPForward(h.ns)
}

// restoreForward puts back the sysctls enableForward changed, once no
// banger bridge of any user is left in the namespace: the caller has
// just removed its own. A value that is no longer the one banger set is
// left alone (someone changed it since).
func (h *Host) restoreForward(ctx context.Context) error {
	if h.sysctlDir == "" {
		return nil
	}
	unlock, err := h.lockSysctls(ctx)
	if err != nil {
		return err
	}
	defer unlock()
	id, err := h.nsIdentity()
	if err != nil {
		return err
	}
	s, ok, err := h.readMemory(id)
	if err != nil {
		return err
	}
	if !ok {
		if err := os.Remove(h.memoryPath(id)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("netmgr: cannot remove stale sysctl memory: %w", err)
		}
		return nil
	}
	links, err := h.h.LinkList()
	if err != nil {
		return fmt.Errorf("netmgr: cannot list links: %w", err)
	}
	for _, l := range links {
		if _, mine := aliasOwner(l.Attrs().Alias); mine && l.Type() == "bridge" {
			return nil // a banger network is still up and needs forwarding
		}
	}
	for key, prev := range s.Prev {
		if key != forwardKey {
			continue // only ip_forward is ever saved
		}
		cur, err := readSysctlIn(h.ns, key)
		if err != nil {
			return err
		}
		if cur != "1" {
			continue
		}
		if err := runIn(h.ns, func() error { _, err := setSysctl(key, prev); return err }); err != nil {
			return fmt.Errorf("%w; banger turned it on and is putting back its old value (remembered in %s)", err, h.memoryPath(id))
		}
	}
	if err := os.Remove(h.memoryPath(id)); err != nil {
		return fmt.Errorf("netmgr: sysctls put back, but cannot remove their memory: %w", err)
	}
	return nil
}

// readSysctlIn reads /proc/sys/<key> in the network namespace ns.
func readSysctlIn(ns netns.NsHandle, key string) (string, error) {
	var v string
	err := runIn(ns, func() error {
		b, err := os.ReadFile(filepath.Join("/proc/sys", key))
		if err != nil {
			return fmt.Errorf("netmgr: cannot read sysctl %s: %w", key, err)
		}
		v = strings.TrimSpace(string(b))
		return nil
	})
	return v, err
}
