package dmsnap

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// LockFile is the name of the flock file under Manager.LockDir.
const LockFile = "dmsnap.lock"

// procLock is the process-wide lock: a one-slot semaphore, so that waiting
// for it can be cancelled.
var procLock = make(chan struct{}, 1)

// lockPoll is how often a blocked flock is retried.
const lockPoll = 20 * time.Millisecond

// lock takes the process-wide lock, then the flock under LockDir (if set).
// The returned func releases both.
func (m *Manager) lock(ctx context.Context) (func(), error) {
	select {
	case procLock <- struct{}{}:
	case <-ctx.Done():
		return nil, fmt.Errorf("waiting for the loop/device-mapper lock: %w", ctx.Err())
	}
	if m == nil || m.LockDir == "" {
		return func() { <-procLock }, nil
	}
	f, err := m.lockFile(ctx)
	if err != nil {
		<-procLock
		return nil, err
	}
	return func() {
		f.Close() // drops the flock
		<-procLock
	}, nil
}

func (m *Manager) lockFile(ctx context.Context) (*os.File, error) {
	if err := os.MkdirAll(m.LockDir, 0o700); err != nil {
		return nil, fmt.Errorf("create the lock directory %s: %w", m.LockDir, err)
	}
	p := filepath.Join(m.LockDir, LockFile)
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open the lock file %s: %w", p, err)
	}
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return f, nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) && !errors.Is(err, unix.EINTR) {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", p, err)
		}
		t := time.NewTimer(lockPoll)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			f.Close()
			return nil, fmt.Errorf("waiting for %s (another banger process is changing loop or device-mapper devices): %w", p, ctx.Err())
		}
	}
}
