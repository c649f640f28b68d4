package dmsnap

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Another process holding the flock (here: another open file description
// of the lock file, which flock treats alike) keeps the Manager waiting
// until it lets go; a deadline ends the wait with an error naming the file.
func TestLockWaitsForFlockHolder(t *testing.T) {
	dir := t.TempDir()
	m := &Manager{LockDir: dir}
	other, err := os.OpenFile(filepath.Join(dir, LockFile), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if err := unix.Flock(int(other.Fd()), unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	_, err = m.lock(ctx)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), LockFile) {
		t.Fatalf("lock while another holds the flock: %v; want a deadline error naming %s", err, LockFile)
	}
	// The failed wait released the process-wide lock too.
	unix.Flock(int(other.Fd()), unix.LOCK_UN)
	unlock, err := m.lock(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	// Held now: the other side cannot take it.
	if err := unix.Flock(int(other.Fd()), unix.LOCK_EX|unix.LOCK_NB); !errors.Is(err, unix.EWOULDBLOCK) {
		t.Errorf("flock while the Manager holds it: %v, want EWOULDBLOCK", err)
	}
	unlock()
	if err := unix.Flock(int(other.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		t.Errorf("flock after unlock: %v", err)
	}
}

// The process-wide lock is shared by all Managers, with or without LockDir.
func TestProcessLockSharedAcrossManagers(t *testing.T) {
	a := &Manager{}
	b := &Manager{LockDir: t.TempDir()}
	unlock, err := a.lock(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := b.lock(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("second Manager got the lock while the first held it: %v", err)
	}
	unlock()
	unlock2, err := b.lock(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	unlock2()
}

func TestLockDirUnusable(t *testing.T) {
	f := filepath.Join(t.TempDir(), "file")
	os.WriteFile(f, nil, 0o600)
	m := &Manager{LockDir: filepath.Join(f, "sub")}
	if _, err := m.lock(context.Background()); err == nil || !strings.Contains(err.Error(), "lock directory") {
		t.Fatalf("lock under a file: %v", err)
	}
	// The process lock was given back.
	unlock, err := (&Manager{}).lock(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	unlock()
}
