package qemuproc

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"

	"golang.org/x/sys/unix"
)

// Adopt re-attaches to a QEMU this package started earlier, typically by a
// previous daemon: pid must still be the process that started at startTime
// (field 22 of /proc/PID/stat) and its command line must name Dir (the
// -name marker, or Dir/qmp.sock for a QEMU of an older banger). The accelerator and the forwards are read back from that
// command line. Done closes when the process exits (watched through a
// pidfd); Stop works as for a started process, and SIGKILL goes through the
// pidfd, so a reused PID is never signalled. A mismatch is ErrNotOurs.
func Adopt(pid int, startTime uint64, dir string) (*Process, error) {
	if pid <= 0 {
		return nil, fmt.Errorf("adopt QEMU: pid %d is not a process id", pid)
	}
	dir = strings.TrimRight(dir, "/")
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		if errors.Is(err, unix.ESRCH) {
			return nil, fmt.Errorf("adopt QEMU pid %d: %w: the process no longer exists (the VM has stopped)", pid, ErrNotOurs)
		}
		return nil, fmt.Errorf("adopt QEMU pid %d: pidfd_open: %w (needs Linux 5.3 or later)", pid, err)
	}
	// Non-blocking, so that os.NewFile puts it in the runtime's poller.
	_ = unix.SetNonblock(fd, true)
	pidfd := os.NewFile(uintptr(fd), fmt.Sprintf("pidfd:%d", pid))
	fail := func(err error) (*Process, error) {
		pidfd.Close()
		return nil, err
	}
	// Checked after opening the pidfd: if the PID were reused in between,
	// the start time would not match.
	st, err := processStartTime(pid)
	if err != nil {
		return fail(fmt.Errorf("adopt QEMU pid %d: %w: %v", pid, ErrNotOurs, err))
	}
	if st != startTime {
		return fail(fmt.Errorf("adopt QEMU pid %d: %w: it started at tick %d, ours at tick %d (the PID was reused; the VM has stopped)", pid, ErrNotOurs, st, startTime))
	}
	args, err := processArgs(pid)
	if err != nil {
		return fail(fmt.Errorf("adopt QEMU pid %d: read its command line: %w", pid, err))
	}
	if !IsCommandLineOf(args, dir) {
		return fail(fmt.Errorf("adopt QEMU pid %d: %w: its command line has no -name %q, so it is not the QEMU of %s", pid, ErrNotOurs, NameMarker(dir), dir))
	}
	accel, fwds := describeArgs(args)
	p := &Process{
		PID:         pid,
		StartTime:   startTime,
		Dir:         dir,
		QMPSocket:   QMPSocketPath(dir),
		AgentSocket: AgentSocketPath(dir),
		ConsoleLog:  ConsoleLogPath(dir),
		Log:         LogPath(dir),
		Accel:       accel,
		AccelReason: "adopted: read back from the running QEMU's command line",
		Forwards:    fwds,
		Timeouts:    Timeouts{}.withDefaults(),
		pidfd:       pidfd,
		done:        make(chan struct{}),
	}
	go p.watchPidfd()
	return p, nil
}

// watchPidfd closes done when the adopted process exits: a pidfd turns
// readable then. The wait parks in the runtime's poller, not in a thread.
// The goroutine lives exactly as long as the process.
func (p *Process) watchPidfd() {
	defer p.pidfd.Close() // after done is closed
	defer close(p.done)
	exited := func(fd uintptr) bool {
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, 0)
		return err != nil && !errors.Is(err, unix.EINTR) || n > 0
	}
	rc, err := p.pidfd.SyscallConn()
	if err == nil {
		err = rc.Read(exited)
	}
	if err != nil && rc != nil {
		// Not pollable: fall back to blocking in poll(2) on this thread.
		_ = rc.Control(func(fd uintptr) {
			for {
				fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
				if n, err := unix.Poll(fds, -1); n > 0 || err != nil && !errors.Is(err, unix.EINTR) {
					return
				}
			}
		})
	}
}

// IsCommandLineOf reports whether args (a /proc/PID/cmdline split at its
// NULs) is the argv of a QEMU this package started in dir: one of its
// arguments is exactly the -name marker of dir, or, for a QEMU started
// before its descriptors were passed in, its monitor socket's chardev.
// A command that merely names a file in dir (a user's `tail -f
// dir/console.log`) is not.
func IsCommandLineOf(args []string, dir string) bool {
	dir = strings.TrimRight(dir, "/")
	qmpArg := "unix:" + QMPSocketPath(dir) + ",server=on,wait=off"
	return slices.Contains(args, NameMarker(dir)) || slices.Contains(args, qmpArg)
}
