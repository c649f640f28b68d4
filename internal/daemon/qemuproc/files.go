package qemuproc

import (
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// openFiles opens everything QEMU is given, in the order of the fd
// constants (the first is fd 3 in QEMU): the monitor's and the agent's
// listening sockets (made here, at their paths in Dir), the console log,
// the kernel and initrd, the drives and the tap. other says QEMU runs as
// another user: a kernel or initrd that user could not read is then handed
// over as a sealed in-memory copy. On error nothing is left open; the
// caller removes the sockets.
func (p *plan) openFiles(other bool) (files []*os.File, err error) {
	defer func() {
		if err != nil {
			closeAll(files)
			files = nil
		}
	}()
	// QEMU's argv names each descriptor by number: the order is fixed.
	add := func(_ int, f *os.File) { files = append(files, f) }
	c := &p.cfg
	for _, s := range []struct {
		fd   int
		path string
	}{{fdQMP, QMPSocketPath(c.Dir)}, {fdAgent, AgentSocketPath(c.Dir)}} {
		f, err := listenFile(s.path)
		if err != nil {
			return nil, err
		}
		add(s.fd, f)
	}
	console, err := os.OpenFile(ConsoleLogPath(c.Dir), os.O_WRONLY|os.O_CREATE|os.O_TRUNC|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open the console log: %w", err)
	}
	add(fdConsole, console)
	k, err := readableFile(c.Kernel, other)
	if err != nil {
		return nil, fmt.Errorf("kernel: %w", err)
	}
	add(fdKernel, k)
	if c.Initrd != "" {
		f, err := readableFile(c.Initrd, other)
		if err != nil {
			return nil, fmt.Errorf("initrd: %w", err)
		}
		add(p.fdInitrd(), f)
	}
	p.blockDevs = make([]bool, len(c.Drives))
	for i, d := range c.Drives {
		ro, err := os.OpenFile(d.Path, os.O_RDONLY, 0)
		if err != nil {
			return nil, fmt.Errorf("drive %d: %w", i, err)
		}
		add(p.fdDrive(i), ro)
		if fi, err := ro.Stat(); err == nil && fi.Mode()&os.ModeDevice != 0 && fi.Mode()&os.ModeCharDevice == 0 {
			p.blockDevs[i] = true
		}
		flag := os.O_RDWR
		if d.ReadOnly {
			flag = os.O_RDONLY
		}
		rw, err := os.OpenFile(d.Path, flag, 0)
		if err != nil {
			return nil, fmt.Errorf("drive %d: %w", i, err)
		}
		add(p.fdDrive(i)+1, rw)
	}
	if t := c.Net.Tap; t != nil {
		f, err := openTap(t.Name)
		if err != nil {
			return nil, err
		}
		add(p.fdTap(), f)
	}
	if f, err := p.openIncoming(); err != nil {
		return nil, err
	} else if f != nil {
		add(p.fdIncoming(), f)
	}
	return files, nil
}

func closeAll(files []*os.File) {
	for _, f := range files {
		f.Close()
	}
}

// listenFile makes a listening Unix socket at path and returns its
// descriptor; the socket file stays when it is closed here, since QEMU
// keeps listening on it.
func listenFile(path string) (*os.File, error) {
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	l.SetUnlinkOnClose(false)
	defer l.Close()
	f, err := l.File()
	if err != nil {
		os.Remove(path)
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	return f, nil
}

// readableFile opens path for QEMU to read through /proc/self/fd. Reopening
// that link checks the file's own mode, not its directories': when QEMU runs
// as another user (other) and the file is not readable by everyone, it gets
// a sealed in-memory copy instead, which lives as long as QEMU.
func readableFile(path string, other bool) (*os.File, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil || !other || fi.Mode().Perm()&0o004 != 0 {
		if err != nil {
			f.Close()
		}
		return f, err
	}
	defer f.Close()
	fd, err := unix.MemfdCreate("banger:"+filepath.Base(path), unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return nil, fmt.Errorf("copy %s for QEMU: memfd_create: %w", path, err)
	}
	m := os.NewFile(uintptr(fd), "memfd:"+path)
	if _, err := io.Copy(m, f); err != nil {
		m.Close()
		return nil, fmt.Errorf("copy %s for QEMU: %w", path, err)
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, unix.F_SEAL_WRITE|unix.F_SEAL_GROW|unix.F_SEAL_SHRINK|unix.F_SEAL_SEAL); err != nil {
		m.Close()
		return nil, fmt.Errorf("copy %s for QEMU: seal: %w", path, err)
	}
	return m, nil
}

// openTap attaches a descriptor to the existing tap name, with the flags
// QEMU itself would use.
func openTap(name string) (*os.File, error) {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open /dev/net/tun for tap %s: %w", name, err)
	}
	ifr, err := unix.NewIfreq(name)
	if err == nil {
		ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI | unix.IFF_VNET_HDR)
		err = unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr)
	}
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("attach to tap %s: %w (does it exist, and does it belong to this user?)", name, err)
	}
	return os.NewFile(uintptr(fd), "tap:"+name), nil
}
