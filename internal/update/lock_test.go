package update

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"banger/internal/testutil/treestate"
)

// Anyone who can read the install's directory can flock it; that must not
// stop an update: Lock waits LockWait for it, then goes on. The lock file
// is gone once the update is done.
func TestLockIsNotStoppedByAStrayLockOnTheDirectory(t *testing.T) {
	in := newInstall(t, "v1")
	before := treestate.Snapshot(t, in.Dir)
	d, err := os.Open(in.Dir)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if err := syscall.Flock(int(d.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	unlock, err := in.Lock()
	if err != nil {
		t.Fatalf("Lock under a stray directory lock: %v", err)
	}
	if _, err := in.Lock(); err == nil || !strings.Contains(err.Error(), "another `banger update` is running") {
		t.Errorf("second Lock: %v", err)
	}
	unlock()
	if after := treestate.Snapshot(t, in.Dir); len(after) != len(before) {
		t.Errorf("the lock left files behind: %v", after)
	}
}

func TestLockRefusesAPlantedLockFile(t *testing.T) {
	t.Run("a symbolic link", func(t *testing.T) {
		in := newInstall(t, "v1")
		target := filepath.Join(t.TempDir(), "victim")
		if err := os.Symlink(target, in.Path(LockFile)); err != nil {
			t.Fatal(err)
		}
		before := treestate.Snapshot(t, in.Dir)
		_, err := in.Lock()
		refusedUnchanged(t, in.Dir, before, err, "is a symbolic link")
		if _, err := os.Lstat(target); !os.IsNotExist(err) {
			t.Errorf("the link was followed: %v", err)
		}
	})
	t.Run("a FIFO", func(t *testing.T) {
		in := newInstall(t, "v1")
		if err := syscall.Mkfifo(in.Path(LockFile), 0o600); err != nil {
			t.Fatal(err)
		}
		before := treestate.Snapshot(t, in.Dir)
		done := make(chan error, 1)
		go func() { _, err := in.Lock(); done <- err }()
		select {
		case err := <-done:
			refusedUnchanged(t, in.Dir, before, err, "is not a regular file")
		case <-time.After(5 * time.Second):
			t.Fatal("Lock hung on a FIFO")
		}
	})
	t.Run("owned by another user", func(t *testing.T) {
		if os.Geteuid() != 0 {
			t.Skip("needs root to give a file to another user")
		}
		in := newInstall(t, "v1")
		writeBin(t, in.Path(LockFile), "")
		if err := os.Chown(in.Path(LockFile), 54321, 54321); err != nil {
			t.Fatal(err)
		}
		before := treestate.Snapshot(t, in.Dir)
		_, err := in.Lock()
		refusedUnchanged(t, in.Dir, before, err, "neither root, you nor the owner of")
	})
}
