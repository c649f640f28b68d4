package tarsafe

import (
	"archive/tar"
	"fmt"
	"os"
	"path"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// What os.Root has no call for (mknod, times and xattrs of a symlink) is
// done with *at system calls on a directory opened through the root, on a
// name that is one component: nothing is resolved outside the root.

// xattrPAXPrefix starts the PAX records that carry extended attributes.
const xattrPAXPrefix = "SCHILY.xattr."

// at returns a descriptor of the directory holding name, opened through
// the root without following a symlink, and name's last component.
func (x *extractor) at(name string) (int, string, error) {
	dir := path.Dir(name)
	if x.atDir == nil || x.atName != dir {
		x.closeAt()
		f, err := x.root.OpenFile(dir, os.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW, 0)
		if err != nil {
			return -1, "", err
		}
		x.atDir, x.atName = f, dir
	}
	return int(x.atDir.Fd()), path.Base(name), nil
}

// closeAt closes the cached directory of at.
func (x *extractor) closeAt() {
	if x.atDir != nil {
		x.atDir.Close()
		x.atDir = nil
	}
}

// mknod makes the device or FIFO of hdr at name.
func (x *extractor) mknod(name string, hdr *tar.Header) error {
	fd, base, err := x.at(name)
	if err != nil {
		return err
	}
	mode := uint32(hdr.Mode & 0o777)
	var dev uint64
	switch hdr.Typeflag {
	case tar.TypeChar:
		mode |= unix.S_IFCHR
		dev = unix.Mkdev(uint32(hdr.Devmajor), uint32(hdr.Devminor))
	case tar.TypeBlock:
		mode |= unix.S_IFBLK
		dev = unix.Mkdev(uint32(hdr.Devmajor), uint32(hdr.Devminor))
	default:
		mode |= unix.S_IFIFO
	}
	if err := unix.Mknodat(fd, base, mode, int(dev)); err != nil {
		return fmt.Errorf("mknod (%d:%d): %w", hdr.Devmajor, hdr.Devminor, err)
	}
	return nil
}

// xattrs applies the extended attributes of hdr to name, not following
// it; those the filesystem refuses are told to Options.Skip.
func (x *extractor) xattrs(name string, hdr *tar.Header) {
	for k, v := range hdr.PAXRecords {
		key, ok := strings.CutPrefix(k, xattrPAXPrefix)
		if !ok || key == "" {
			continue
		}
		err := x.lsetxattr(name, key, v)
		if err != nil && x.opts.Skip != nil {
			x.opts.Skip(name, fmt.Sprintf("xattr %s (%v)", key, err))
		}
	}
}

func (x *extractor) lsetxattr(name, key, val string) error {
	fd, base, err := x.at(name)
	if err != nil {
		return err
	}
	// The magic link of the open directory, then one component that
	// lsetxattr does not follow.
	return unix.Lsetxattr(fmt.Sprintf("/proc/self/fd/%d/%s", fd, base), key, []byte(val), 0)
}

// times sets name's times from hdr; nofollow for what may be a symlink.
func (x *extractor) times(name string, hdr *tar.Header, nofollow bool) error {
	return x.setTimes(name, hdr.AccessTime, hdr.ModTime, nofollow)
}

// setTimes sets name's access and modification times, nothing when mt is
// zero; a zero at is taken as mt.
func (x *extractor) setTimes(name string, at, mt time.Time, nofollow bool) error {
	if mt.IsZero() {
		return nil
	}
	if at.IsZero() {
		at = mt
	}
	if !nofollow {
		return x.root.Chtimes(name, at, mt)
	}
	fd, base, err := x.at(name)
	if err != nil {
		return err
	}
	ts := []unix.Timespec{unix.NsecToTimespec(at.UnixNano()), unix.NsecToTimespec(mt.UnixNano())}
	return unix.UtimesNanoAt(fd, base, ts, unix.AT_SYMLINK_NOFOLLOW)
}
