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

// LockedError says another daemon holds the state dir.
type LockedError struct {
	StateDir string
	PID      int // 0 when unknown
}

func (e *LockedError) Error() string {
	who := "another bangerd"
	if e.PID > 0 {
		who = fmt.Sprintf("another bangerd (pid %d)", e.PID)
	}
	return fmt.Sprintf("%s already runs for state dir %s: stop it with `banger daemon stop`, or give this one another state_dir", who, e.StateDir)
}

// stateLock is an exclusive flock on <state_dir>/bangerd.lock holding the
// owner's PID. The kernel drops it when the process dies, so a crash never
// leaves a stale lock behind.
type stateLock struct{ f *os.File }

func lockStateDir(stateDir string) (*stateLock, error) {
	path := filepath.Join(stateDir, "bangerd.lock")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|unix.O_CLOEXEC, 0o600)
	if err != nil {
		if errors.Is(err, os.ErrPermission) || errors.Is(err, unix.EROFS) {
			return nil, fmt.Errorf("state dir %s is not writable by uid %d: %w; make it writable for bangerd's user, or set state_dir to another directory", stateDir, os.Geteuid(), err)
		}
		return nil, fmt.Errorf("open lock file: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		defer f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, &LockedError{StateDir: stateDir, PID: readLockPID(f)}
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
