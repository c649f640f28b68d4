package bundle

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// lockPoll is how often a fetch waiting for another process's lock looks
// again; flock itself cannot be interrupted by a context.
const lockPoll = 100 * time.Millisecond

// fileLock is an exclusive flock on a lock file that exists only while it
// is held.
type fileLock struct {
	path string
	f    *os.File
}

// lockFile takes an exclusive flock on path, creating the file, and waits
// (honouring ctx) while another process holds it.
//
// The holder removes the file before it lets go (unlock), so lock files do
// not pile up. A waiter may therefore win the lock on a file that has just
// been unlinked; it notices because the path no longer names the file it
// locked, and starts over.
func lockFile(ctx context.Context, path string) (*fileLock, error) {
	t := time.NewTicker(lockPoll)
	defer t.Stop()
	for {
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
		if err != nil {
			return nil, fmt.Errorf("opening lock file %s: %w", path, err)
		}
		for {
			err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
			if err == nil || (!errors.Is(err, unix.EWOULDBLOCK) && !errors.Is(err, unix.EINTR)) {
				break
			}
			select {
			case <-ctx.Done():
				f.Close()
				return nil, fmt.Errorf("waiting for another process's fetch into the same place (lock file %s): %w", path, ctx.Err())
			case <-t.C:
			}
		}
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("locking %s: %w", path, err)
		}
		if samePath(f, path) {
			return &fileLock{path: path, f: f}, nil
		}
		f.Close() // locked a file its holder had already removed
	}
}

func samePath(f *os.File, path string) bool {
	var a, b unix.Stat_t
	if unix.Fstat(int(f.Fd()), &a) != nil || unix.Stat(path, &b) != nil {
		return false
	}
	return a.Dev == b.Dev && a.Ino == b.Ino
}

// unlock removes the lock file and releases the lock, in that order.
func (l *fileLock) unlock() {
	_ = os.Remove(l.path)
	l.f.Close()
}
