package dmsnap

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// loopControl is the loop driver's control node.
var loopControl = "/dev/loop-control"

// loopDev is a bound loop device this process holds open. While it is open
// the autoclear flag cannot detach it; once closed it detaches as soon as its
// last user (the snapshot) lets go.
type loopDev struct {
	Path     string // /dev/loopN
	N        int
	Dev      uint64 // device number
	Backing  string // backing file as given
	ReadOnly bool
	fd       int
}

// attachLoop binds file to a free loop device (read-only when ro) with
// autoclear and returns it open. The caller holds the lock.
func attachLoop(file string, ro bool) (*loopDev, error) {
	flags := unix.O_RDWR
	if ro {
		flags = unix.O_RDONLY
	}
	bfd, err := unix.Open(file, flags|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open %s for a loop device: %w", file, err)
	}
	defer unix.Close(bfd)
	var st unix.Stat_t
	if err := unix.Fstat(bfd, &st); err != nil {
		return nil, fmt.Errorf("stat %s: %w", file, err)
	}
	if mode := st.Mode & unix.S_IFMT; mode != unix.S_IFREG && mode != unix.S_IFBLK {
		return nil, fmt.Errorf("attach %s to a loop device: not a regular file or block device", file)
	}
	ctl, err := unix.Open(loopControl, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open %s (is the loop module loaded? try modprobe loop): %w", loopControl, err)
	}
	defer unix.Close(ctl)

	var lastErr error
	// A free device can be taken by another process between
	// LOOP_CTL_GET_FREE and binding it: then ask again.
	for attempt := 0; attempt < 20; attempt++ {
		n, err := unix.IoctlRetInt(ctl, unix.LOOP_CTL_GET_FREE)
		if err != nil {
			return nil, fmt.Errorf("find a free loop device: %w", err)
		}
		l, err := bindLoop(n, bfd, file, ro)
		if errors.Is(err, unix.EBUSY) {
			lastErr = err
			continue
		}
		if err != nil {
			return nil, err
		}
		return l, nil
	}
	return nil, fmt.Errorf("attach %s to a loop device: every free device was taken before it could be bound: %w", file, lastErr)
}

// bindLoop binds the open backing file bfd to /dev/loopN.
func bindLoop(n, bfd int, file string, ro bool) (*loopDev, error) {
	path := "/dev/loop" + strconv.Itoa(n)
	fd, err := openLoopNode(n, path)
	if err != nil {
		return nil, err
	}
	lo := unix.LoopInfo64{Flags: unix.LO_FLAGS_AUTOCLEAR}
	if ro {
		lo.Flags |= unix.LO_FLAGS_READ_ONLY
	}
	copy(lo.File_name[:unix.LO_NAME_SIZE-1], file)
	err = unix.IoctlLoopConfigure(fd, &unix.LoopConfig{Fd: uint32(bfd), Info: lo})
	if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOTTY) {
		// Kernels before 5.8 have no LOOP_CONFIGURE.
		err = unix.IoctlSetInt(fd, unix.LOOP_SET_FD, bfd)
		if err == nil {
			if err = unix.IoctlLoopSetStatus64(fd, &lo); err != nil {
				_ = unix.IoctlSetInt(fd, unix.LOOP_CLR_FD, 0)
			}
		}
	}
	if err != nil {
		unix.Close(fd)
		if errors.Is(err, unix.EBUSY) {
			return nil, err
		}
		return nil, fmt.Errorf("bind %s to %s: %w", file, path, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		_ = unix.IoctlSetInt(fd, unix.LOOP_CLR_FD, 0)
		unix.Close(fd)
		return nil, fmt.Errorf("stat %s: %w", path, err)
	}
	return &loopDev{Path: path, N: n, Dev: st.Rdev, Backing: file, ReadOnly: ro, fd: fd}, nil
}

// openLoopNode opens /dev/loopN, making the node from sysfs when /dev is
// not a devtmpfs that made it.
func openLoopNode(n int, path string) (int, error) {
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.ENOENT) {
		var maj, min uint32
		maj, min, err = sysDevNumber(fmt.Sprintf("/sys/block/loop%d/dev", n))
		if err != nil {
			return -1, fmt.Errorf("%s is missing and its device number is unknown: %w", path, err)
		}
		if err = unix.Mknod(path, unix.S_IFBLK|0o600, int(unix.Mkdev(maj, min))); err != nil && !errors.Is(err, unix.EEXIST) {
			return -1, fmt.Errorf("make the device node %s: %w", path, err)
		}
		fd, err = unix.Open(path, unix.O_RDWR|unix.O_CLOEXEC, 0)
	}
	if err != nil {
		return -1, fmt.Errorf("open %s: %w", path, err)
	}
	return fd, nil
}

// sysDevNumber reads a sysfs "major:minor" file.
func sysDevNumber(p string) (uint32, uint32, error) {
	b, err := os.ReadFile(p)
	if err != nil {
		return 0, 0, err
	}
	return parseMajorMinor(strings.TrimSpace(string(b)))
}

func parseMajorMinor(s string) (uint32, uint32, error) {
	a, b, ok := strings.Cut(s, ":")
	if !ok {
		return 0, 0, fmt.Errorf("%q is not major:minor", s)
	}
	maj, err1 := strconv.ParseUint(a, 10, 32)
	min, err2 := strconv.ParseUint(b, 10, 32)
	if err1 != nil || err2 != nil {
		return 0, 0, fmt.Errorf("%q is not major:minor", s)
	}
	return uint32(maj), uint32(min), nil
}

// release closes this process's handle; autoclear then detaches the device
// when its last user goes.
func (l *loopDev) release() {
	if l.fd >= 0 {
		unix.Close(l.fd)
		l.fd = -1
	}
}

// detach unbinds the device now (or, if someone else still has it open,
// as soon as they close it) and releases the handle.
func (l *loopDev) detach() error {
	defer l.release()
	if err := unix.IoctlSetInt(l.fd, unix.LOOP_CLR_FD, 0); err != nil && !errors.Is(err, unix.ENXIO) {
		return fmt.Errorf("detach %s: %w", l.Path, err)
	}
	return nil
}

// sectors is the device's size in 512-byte sectors.
func (l *loopDev) sectors() (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/sys/block/loop%d/size", l.N))
	if err != nil {
		return 0, fmt.Errorf("size of %s: %w", l.Path, err)
	}
	return strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
}

// loopInfo is what the kernel says about a bound loop device.
type loopInfo struct {
	Path    string // /dev/loopN
	Name    string // loopN
	Backing string // backing file, from sysfs ("" when unbound)
	Device  uint64 // backing file's st_dev
	Inode   uint64 // backing file's inode
}

// blockName finds the block device name (e.g. loop3, dm-0) of maj:min.
func blockName(maj, min uint32) (string, error) {
	link, err := os.Readlink(fmt.Sprintf("/sys/dev/block/%d:%d", maj, min))
	if err != nil {
		return "", err
	}
	return filepath.Base(link), nil
}

// loopByNumber describes the loop device maj:min, or returns an error when it
// is not a bound loop device.
func loopByNumber(maj, min uint32) (loopInfo, error) {
	name, err := blockName(maj, min)
	if err != nil {
		return loopInfo{}, fmt.Errorf("block device %d:%d: %w", maj, min, err)
	}
	if !strings.HasPrefix(name, "loop") {
		return loopInfo{}, fmt.Errorf("block device %d:%d is %s, not a loop device", maj, min, name)
	}
	li := loopInfo{Path: "/dev/" + name, Name: name}
	if b, err := os.ReadFile("/sys/block/" + name + "/loop/backing_file"); err == nil {
		li.Backing = strings.TrimSpace(string(b))
	}
	fd, err := unix.Open(li.Path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return li, fmt.Errorf("open %s: %w", li.Path, err)
	}
	defer unix.Close(fd)
	info, err := unix.IoctlLoopGetStatus64(fd)
	if err != nil {
		return li, fmt.Errorf("status of %s: %w", li.Path, err)
	}
	li.Device, li.Inode = info.Device, info.Inode
	return li, nil
}

// detachIfSame detaches the loop device maj:min if it is still bound to the
// backing file (st_dev, inode) recorded in want; a device that autoclear
// already freed, or that someone has since bound to another file, is left
// alone.
func detachIfSame(maj, min uint32, want loopInfo) error {
	now, err := loopByNumber(maj, min)
	if err != nil || now.Device != want.Device || now.Inode != want.Inode {
		return nil
	}
	fd, err := unix.Open(now.Path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %s to detach it: %w", now.Path, err)
	}
	defer unix.Close(fd)
	if err := unix.IoctlSetInt(fd, unix.LOOP_CLR_FD, 0); err != nil && !errors.Is(err, unix.ENXIO) {
		return fmt.Errorf("detach %s (backing %s): %w", now.Path, now.Backing, err)
	}
	return nil
}
