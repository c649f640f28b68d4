package update

import (
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"
)

// LockFile, in the install's directory, exists while an update holds it.
const LockFile = ".banger-update.lock"

// LockWait bounds how long Lock waits for a bangerd start from the
// install to finish (see Lock).
var LockWait = 20 * time.Second

// Lock takes the install's two update locks:
//
//   - LockFile, exclusively, so that two updates never run at once. It is
//     made mode 0600 and owned by the install directory's owner, so no
//     other user can open, hence flock, it; it is removed at unlock (and
//     only held once the path is still the file locked). A second update
//     is refused at once.
//   - the directory itself, exclusively, so that no banger command starts
//     a bangerd from the install while the update restarts it (such a
//     start takes it shared until bangerd answers, and waits while the
//     journal says an update is under way). Anyone who can read the
//     directory can flock it, so Lock waits at most LockWait for it and
//     then goes on without it: the version checks of the restart still
//     catch a bangerd of the wrong build.
func (in *Install) Lock() (unlock func(), err error) {
	f, err := in.lockFile()
	if err != nil {
		return nil, err
	}
	d, err := os.Open(in.Dir)
	if err != nil {
		in.dropLock(f)
		return nil, fmt.Errorf("open %s: %w", in.Dir, err)
	}
	deadline := time.Now().Add(LockWait)
	for {
		err := syscall.Flock(int(d.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil || !errors.Is(err, syscall.EWOULDBLOCK) || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	return func() {
		d.Close()
		in.dropLock(f)
	}, nil
}

// lockFile opens (creating it if needed) and locks LockFile, never through
// a link, and refuses one another user planted.
func (in *Install) lockFile() (*os.File, error) {
	p := in.Path(LockFile)
	for range 10 {
		// O_NONBLOCK: a FIFO planted at the name must not hang the open.
		f, err := os.OpenFile(p, os.O_RDONLY|os.O_CREATE|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0o600)
		if errors.Is(err, syscall.ELOOP) {
			return nil, refused("%s is a symbolic link, which an update never makes: remove it (`rm %s`)", p, p)
		}
		if err != nil {
			return nil, fmt.Errorf("open the update lock %s: %w", p, err)
		}
		fi, err := f.Stat()
		if err == nil {
			err = in.madeByUpdate(p, fi, -1)
		}
		if err != nil {
			f.Close()
			return nil, err
		}
		if os.Geteuid() == 0 {
			if uid := uidOf(in.Dir); uid > 0 {
				_ = f.Chown(uid, -1) // so that the install's owner can lock it next time
			}
		}
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
			f.Close()
			if errors.Is(err, syscall.EWOULDBLOCK) {
				return nil, refused("another `banger update` is running on %s: wait for it to finish", in.Dir)
			}
			return nil, fmt.Errorf("lock %s: %w", p, err)
		}
		// The holder before us may have removed the file after we opened
		// it: then we locked a name that no longer exists; start again.
		if cur, err := os.Lstat(p); err == nil && os.SameFile(cur, fi) {
			return f, nil
		}
		f.Close()
	}
	return nil, fmt.Errorf("lock %s: it keeps being replaced", p)
}

// dropLock removes LockFile, then releases it (in that order, so that
// whoever locks the name next locks a file that stays).
func (in *Install) dropLock(f *os.File) {
	_ = os.Remove(in.Path(LockFile))
	f.Close()
}
