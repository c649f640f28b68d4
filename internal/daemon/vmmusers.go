package daemon

import (
	"banger/internal/procwatch"
	"errors"
	"fmt"
	"hash/fnv"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"banger/internal/daemon/qemuproc"

	"golang.org/x/sys/unix"
)

// VMM users. Under a root bangerd each VM's QEMU runs as a uid of its own
// from this range, with the same number as its group and no user entry:
// QEMU is handed its VM's files as open descriptors, so that uid can open
// nothing of the host's, of bangerd's or of another VM's beyond what any
// user can. The range sits in the part of the 32-bit uid space that
// systemd leaves unused (0x70000000-0x7FFEFFFF) and avoids any uid or gid
// with an entry in /etc/passwd or /etc/group.
const (
	vmmUIDBase  = 0x7A000000
	vmmUIDCount = 0x10000
)

// vmmUIDLockPath is where root bangerds (of any state dir) take turns on
// VMM uids: each holds a lock on byte uid-vmmUIDBase of it while it starts
// a VMM as that uid, until the VMM runs and shows in /proc.
var vmmUIDLockPath = "/run/banger-vmm-uids.lock"

// vmmUsers hands out VMM uids: one that no process uses, no start in
// progress in this bangerd holds, and no other root bangerd is starting a
// VMM as.
type vmmUsers struct {
	mu    sync.Mutex
	taken map[uint32]bool
	lock  *os.File // vmmUIDLockPath, opened at the first credential
}

// credential picks a uid for the VMM of VM id, preferring one derived from
// the id, and returns it with a release for when the VMM has started (or
// failed to): from then on its process marks the uid as used. A bangerd
// that is not root gets nil: its VMM runs as its own user.
func (u *vmmUsers) credential(id string) (*syscall.Credential, func(), error) {
	if os.Geteuid() != 0 {
		return nil, func() {}, nil
	}
	h := fnv.New32a()
	h.Write([]byte(id))
	first := h.Sum32() % vmmUIDCount
	// The scan is made under the lock, so that a uid another start has
	// released since is seen in use by its running VMM.
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.taken == nil {
		u.taken = map[uint32]bool{}
	}
	if u.lock == nil {
		f, err := os.OpenFile(vmmUIDLockPath, os.O_RDWR|os.O_CREATE|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0o600)
		if err != nil {
			return nil, nil, fmt.Errorf("choose a user for the VMM: open %s, which root bangerds share to pick distinct VMM uids: %w", vmmUIDLockPath, err)
		}
		u.lock = f
	}
	used, err := uidsInUse(vmmUIDBase, vmmUIDCount)
	if err != nil {
		return nil, nil, fmt.Errorf("choose a user for the VMM: %w", err)
	}
	for i := uint32(0); i < vmmUIDCount; i++ {
		uid := vmmUIDBase + (first+i)%vmmUIDCount
		if used[uid] || u.taken[uid] {
			continue
		}
		locked, err := u.lockUID(uid, unix.F_WRLCK)
		if err != nil {
			return nil, nil, fmt.Errorf("choose a user for the VMM: lock uid %d in %s: %w", uid, vmmUIDLockPath, err)
		}
		if !locked {
			continue // another bangerd is starting a VMM as it
		}
		// Another bangerd may have started its VMM as uid (and let go of
		// its lock) since the scan.
		now, err := uidsInUse(uid, 1)
		if err != nil || now[uid] {
			_, _ = u.lockUID(uid, unix.F_UNLCK)
			if err != nil {
				return nil, nil, fmt.Errorf("choose a user for the VMM: %w", err)
			}
			continue
		}
		u.taken[uid] = true
		cred := &syscall.Credential{Uid: uid, Gid: uid, Groups: kvmGroup()}
		return cred, func() {
			u.mu.Lock()
			delete(u.taken, uid)
			_, _ = u.lockUID(uid, unix.F_UNLCK)
			u.mu.Unlock()
		}, nil
	}
	return nil, nil, fmt.Errorf("choose a user for the VMM: all %d uids from %d are in use (by processes, by /etc/passwd or /etc/group, or inside a range of /etc/subuid or /etc/subgid); free some, or run bangerd as a user (docs/install.md)", vmmUIDCount, vmmUIDBase)
}

// lockUID takes (F_WRLCK, without waiting) or drops (F_UNLCK) this
// bangerd's hold on uid in the shared lock file; locked is false when
// another bangerd holds it. The locks belong to the open file (OFD locks),
// so they go when bangerd dies.
func (u *vmmUsers) lockUID(uid uint32, typ int16) (locked bool, err error) {
	lk := unix.Flock_t{Type: typ, Whence: 0, Start: int64(uid - vmmUIDBase), Len: 1}
	err = unix.FcntlFlock(u.lock.Fd(), unix.F_OFD_SETLK, &lk)
	if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EACCES) {
		return false, nil
	}
	return err == nil, err
}

// kvmGroup is the group of /dev/kvm when it lets its group in, so that a
// VMM running as its own user can still use KVM (see kvmGroupOf).
func kvmGroup() []uint32 { return kvmGroupOf(qemuproc.KVMDevice, "/etc/group") }

// kvmGroupOf is the group of dev when dev lets its group read and write
// it and groupFile names that group "kvm". Any other group is never
// handed to a VMM: a /dev/kvm left in root's, disk's or a user's group
// would give a VM's QEMU every file of that group (disk: the host's block
// devices). QEMU then cannot open dev, and the start falls back to TCG.
func kvmGroupOf(dev, groupFile string) []uint32 {
	fi, err := os.Stat(dev)
	if err != nil || fi.Mode().Perm()&0o060 != 0o060 {
		return nil
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok || st.Gid == 0 {
		return nil
	}
	b, err := os.ReadFile(groupFile)
	if err != nil {
		return nil
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Split(l, ":"); len(f) > 2 && f[0] == "kvm" && f[2] == strconv.FormatUint(uint64(st.Gid), 10) {
			return []uint32{st.Gid}
		}
	}
	return nil
}

// The files uidsInUse reads (tests point them elsewhere): the user and
// group databases, and the subordinate id ranges of users.
var (
	idDBs    = []string{"/etc/passwd", "/etc/group"}
	subIDDBs = []string{"/etc/subuid", "/etc/subgid"}
)

// uidsInUse lists the uids in [base, base+n) that a process runs as, that
// /etc/passwd or /etc/group names, or that /etc/subuid or /etc/subgid
// gives a user: that user's user namespaces (rootless containers,
// newuidmap) can run processes as those uids, which could then ptrace or
// signal a VMM running as one of them.
func uidsInUse(base, n uint32) (map[uint32]bool, error) {
	used := map[uint32]bool{}
	in := func(s string) {
		if v, err := strconv.ParseUint(s, 10, 32); err == nil && uint32(v) >= base && uint32(v)-base < n {
			used[uint32(v)] = true
		}
	}
	for _, db := range subIDDBs {
		b, err := os.ReadFile(db)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, err
		}
		for _, l := range strings.Split(string(b), "\n") {
			// NAME_OR_ID:START:COUNT
			f := strings.Split(strings.TrimSpace(l), ":")
			if len(f) != 3 {
				continue
			}
			start, err1 := strconv.ParseUint(f[1], 10, 64)
			count, err2 := strconv.ParseUint(f[2], 10, 64)
			if err1 != nil || err2 != nil {
				continue
			}
			lo, hi := max(start, uint64(base)), min(start+count, uint64(base)+uint64(n))
			for v := lo; v < hi; v++ {
				used[uint32(v)] = true
			}
		}
	}
	for _, db := range idDBs {
		b, err := os.ReadFile(db)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, err
		}
		for _, l := range strings.Split(string(b), "\n") {
			if f := strings.Split(l, ":"); len(f) > 3 {
				in(f[2])
				in(f[3])
			}
		}
	}
	procs, err := procwatch.Scan()
	if err != nil {
		return nil, err
	}
	for _, p := range procs {
		uids, err := p.UIDs()
		if err != nil {
			continue // gone
		}
		for _, u := range uids {
			if u >= base && u-base < n {
				used[u] = true
			}
		}
	}
	return used, nil
}
