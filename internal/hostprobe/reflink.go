package hostprobe

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// fsNames names the filesystems a state dir is likely to be on.
var fsNames = map[int64]string{
	0xEF53:     "ext4",
	0x9123683E: "btrfs",
	0x58465342: "xfs",
	0x01021994: "tmpfs",
	0x794c7630: "overlayfs",
	0x2fc12fc1: "zfs",
	0xF2F52010: "f2fs",
	0xca451a4e: "bcachefs",
	0x6969:     "nfs",
	0xFF534D42: "cifs",
	0x65735546: "fuse",
}

// FSName names a statfs filesystem type.
func FSName(t int64) string {
	if n, ok := fsNames[t]; ok {
		return n
	}
	return fmt.Sprintf("filesystem type %#x", t)
}

// ExistingDir returns dir, or its nearest ancestor that exists when dir
// does not exist yet (a fresh install).
func ExistingDir(dir string) string {
	d := filepath.Clean(dir)
	for {
		if fi, err := os.Stat(d); err == nil && fi.IsDir() {
			return d
		}
		parent := filepath.Dir(d)
		if parent == d {
			return d
		}
		d = parent
	}
}

// NotADirectory says why dir cannot be a directory bangerd makes or uses:
// it, or the nearest of its ancestors that exists, is something else (a
// file); nil when that one is a directory, or nothing exists yet.
func NotADirectory(dir string) error {
	d := filepath.Clean(dir)
	for {
		fi, err := os.Stat(d)
		switch {
		case err == nil && fi.IsDir():
			return nil
		case err == nil && d == filepath.Clean(dir):
			return fmt.Errorf("%s exists and is not a directory", d)
		case err == nil:
			return fmt.Errorf("%s cannot be made: %s is not a directory", dir, d)
		}
		parent := filepath.Dir(d)
		if parent == d {
			return nil
		}
		d = parent
	}
}

// Reflink is whether the state dir's filesystem can clone files.
type Reflink struct {
	At        string // the directory tested: the state dir or its nearest existing ancestor
	FS        string // its filesystem's name
	Supported bool
	// Err says why the test could not be made (then Supported tells
	// nothing).
	Err error
}

// tested reports whether the test was made: Supported then tells.
func (r Reflink) tested() bool { return r.Err == nil && r.At != "" }

// untested is why the test was not made.
func (r Reflink) untested() error {
	if r.Err != nil {
		return r.Err
	}
	return errNotTested
}

// errNotTested is Reflink.Err when no state dir was given to test.
var errNotTested = errors.New("no state dir was given to test")

// ProbeReflink tries a FICLONE between two small temporary files in dir
// (or its nearest existing ancestor) and removes them.
func ProbeReflink(dir string) Reflink {
	if dir == "" {
		return Reflink{Err: errNotTested}
	}
	p := Reflink{At: ExistingDir(dir), FS: "unknown filesystem"}
	if err := NotADirectory(dir); err != nil {
		// Nothing is written beside a state dir that cannot be one.
		p.Err = err
		return p
	}
	var st unix.Statfs_t
	if err := unix.Statfs(p.At, &st); err == nil {
		p.FS = FSName(int64(st.Type))
	}
	src, err := os.CreateTemp(p.At, ".banger-probe-*")
	if err != nil {
		p.Err = fmt.Errorf("make a test file in %s: %w", p.At, errnoOf(err))
		return p
	}
	defer os.Remove(src.Name())
	defer src.Close()
	if _, err := src.Write(make([]byte, 4096)); err != nil {
		p.Err = fmt.Errorf("write a test file in %s: %w", p.At, err)
		return p
	}
	dst, err := os.CreateTemp(p.At, ".banger-probe-*")
	if err != nil {
		p.Err = fmt.Errorf("make a test file in %s: %w", p.At, errnoOf(err))
		return p
	}
	defer os.Remove(dst.Name())
	defer dst.Close()
	err = unix.IoctlFileClone(int(dst.Fd()), int(src.Fd()))
	switch {
	case err == nil:
		p.Supported = true
	case errors.Is(err, unix.EOPNOTSUPP), errors.Is(err, unix.EXDEV), errors.Is(err, unix.EINVAL),
		errors.Is(err, unix.ENOTTY), errors.Is(err, unix.ENOSYS):
	default:
		p.Err = fmt.Errorf("FICLONE in %s: %w", p.At, err)
	}
	return p
}
