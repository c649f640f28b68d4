// Package ptypair opens pseudo-terminal pairs for tests: a terminal for a
// program under test, or a raw byte stream standing in for a serial port.
package ptypair

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
	"golang.org/x/term"
)

// Open returns the master and slave ends of a new pseudo-terminal.
func Open() (master, slave *os.File, err error) {
	master, err = os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, nil, err
	}
	if err := unix.IoctlSetPointerInt(int(master.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		master.Close()
		return nil, nil, fmt.Errorf("unlock pty: %w", err)
	}
	n, err := unix.IoctlGetInt(int(master.Fd()), unix.TIOCGPTN)
	if err != nil {
		master.Close()
		return nil, nil, fmt.Errorf("pty number: %w", err)
	}
	slave, err = os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		master.Close()
		return nil, nil, err
	}
	return master, slave, nil
}

// OpenRaw returns a pair whose slave is in raw mode, so bytes pass through
// unchanged both ways, as on a virtio-serial port. Both ends are
// non-blocking and so go through Go's poller: Close wakes a reader blocked
// on the other goroutine, which a blocking tty read would not allow.
func OpenRaw() (master, slave *os.File, err error) {
	m, s, err := Open()
	if err != nil {
		return nil, nil, err
	}
	defer m.Close()
	defer s.Close()
	if _, err := term.MakeRaw(int(s.Fd())); err != nil {
		return nil, nil, fmt.Errorf("raw mode: %w", err)
	}
	master, err = pollable(m)
	if err != nil {
		return nil, nil, err
	}
	slave, err = pollable(s)
	if err != nil {
		master.Close()
		return nil, nil, err
	}
	return master, slave, nil
}

// pollable duplicates f's descriptor in non-blocking mode as a new File,
// which Go registers with its poller.
func pollable(f *os.File) (*os.File, error) {
	fd, err := unix.FcntlInt(f.Fd(), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, err
	}
	return os.NewFile(uintptr(fd), f.Name()), nil
}
