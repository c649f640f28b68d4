package daemon

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// LockedError says another daemon holds the state dir, or (RuntimeDir
// set) the runtime dir.
type LockedError struct {
	StateDir string
	// RuntimeDir is set when the state dir was free but the runtime dir is
	// held by a daemon of another state dir.
	RuntimeDir string
	PID        int // 0 when unknown
}

func (e *LockedError) Error() string {
	who := "another bangerd"
	if e.PID > 0 {
		who = fmt.Sprintf("another bangerd (pid %d)", e.PID)
	}
	if e.RuntimeDir != "" {
		return fmt.Sprintf("runtime dir %s is in use by %s of another state dir: the run dirs of its VMs are there, and this one would take them for leftovers. Stop that daemon, or give this one (state dir %s) another runtime_dir", e.RuntimeDir, who, e.StateDir)
	}
	return fmt.Sprintf("%s already runs for state dir %s: stop it with `banger daemon stop`, or give this one another state_dir", who, e.StateDir)
}

// stateLock is an exclusive flock on <state_dir>/bangerd.lock holding the
// owner's PID. The kernel drops it when the process dies, so a crash never
// leaves a stale lock behind.
type stateLock struct{ f *os.File }

func lockStateDir(stateDir string) (*stateLock, error) {
	return lockDir(stateDir, "state", func(pid int) error {
		return &LockedError{StateDir: stateDir, PID: pid}
	})
}

// lockRuntimeDir takes <runtime_dir>/bangerd.lock the same way, so that
// two daemons of different state dirs never share a runtime dir: each
// would take the other's VM run dirs for leftovers, kill their VMMs and
// remove them. A runtime dir that is the state dir itself is held already
// (nil, nil).
func lockRuntimeDir(runtimeDir string, held *stateLock) (*stateLock, error) {
	if held != nil && held.f != nil {
		a, errA := held.f.Stat()
		b, errB := os.Stat(filepath.Join(runtimeDir, "bangerd.lock"))
		if errA == nil && errB == nil && os.SameFile(a, b) {
			return nil, nil
		}
	}
	return lockDir(runtimeDir, "runtime", func(pid int) error {
		return &LockedError{RuntimeDir: runtimeDir, PID: pid}
	})
}

func lockDir(dir, what string, locked func(pid int) error) (*stateLock, error) {
	path := filepath.Join(dir, "bangerd.lock")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|unix.O_CLOEXEC, 0o600)
	if err != nil {
		if errors.Is(err, os.ErrPermission) || errors.Is(err, unix.EROFS) {
			return nil, fmt.Errorf("%s dir %s is not writable by uid %d: %w; make it writable for bangerd's user, or set %s_dir to another directory", what, dir, os.Geteuid(), err, what)
		}
		return nil, fmt.Errorf("open lock file: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		defer f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, locked(readLockPID(f))
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return &stateLock{f: f}, nil
}

func readLockPID(f *os.File) int {
	b := make([]byte, 32)
	n, _ := f.ReadAt(b, 0)
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b[:n])))
	return pid
}

func (l *stateLock) release() {
	if l == nil || l.f == nil {
		return
	}
	_ = l.f.Truncate(0)
	_ = unix.Flock(int(l.f.Fd()), unix.LOCK_UN)
	_ = l.f.Close()
	l.f = nil
}
