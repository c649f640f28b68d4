package procwatch

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// ErrGone is wrapped by Open when the process has exited (or never was).
var ErrGone = errors.New("the process has exited")

// ErrReused is wrapped by Open when the pid now belongs to a process that
// started at another time: the one asked for has exited and its pid was
// given to another.
var ErrReused = errors.New("the pid belongs to another process")

// ErrClosed is returned by Signal on a Handle closed while its process
// still runs.
var ErrClosed = errors.New("process handle closed")

// Handle holds one process through a pidfd. Signals go through the pidfd,
// so they reach that process or nothing, never a process that took over
// its pid. Done closes when the process exits; the goroutine that waits
// for it belongs to the Handle and ends then, or at Close.
type Handle struct {
	pid       int
	startTime uint64
	fd        *os.File  // the pidfd, non-blocking, in the runtime's poller
	cmd       *exec.Cmd // a child started by Start: the watcher reaps it

	done    chan struct{} // closed once the process has exited
	waitErr error         // cmd.Wait's result; set before done closes

	closing   chan struct{} // closed by Close
	closeOnce sync.Once
	stopped   chan struct{} // closed when the watcher has returned
}

// Open holds the running process pid, which must have started at
// startTime (field 22 of /proc/PID/stat). The start time is checked after
// the pidfd is open, so a pid reused in between is refused: the error
// wraps ErrReused, or ErrGone when the process has exited.
func Open(pid int, startTime uint64) (*Handle, error) {
	if pid <= 0 {
		return nil, fmt.Errorf("open process %d: not a process id", pid)
	}
	fd, err := unix.PidfdOpen(pid, 0)
	if errors.Is(err, unix.ESRCH) {
		return nil, fmt.Errorf("open process %d: %w (no such process)", pid, ErrGone)
	}
	if err != nil {
		return nil, fmt.Errorf("open process %d: pidfd_open: %w (it needs Linux 5.3 or later)", pid, err)
	}
	st, err := ReadStat(pid)
	switch {
	case errors.Is(err, os.ErrNotExist):
		err = fmt.Errorf("open process %d: %w (no such process)", pid, ErrGone)
	case err != nil:
		err = fmt.Errorf("open process %d: %w", pid, err)
	case st.StartTime != startTime:
		err = fmt.Errorf("open process %d: %w: it started at tick %d, the one asked for at tick %d", pid, ErrReused, st.StartTime, startTime)
	case st.Exited():
		err = fmt.Errorf("open process %d: %w (state %c)", pid, ErrGone, st.State)
	}
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	return watch(pid, startTime, fd, nil), nil
}

// Start starts cmd (like cmd.Start, keeping its SysProcAttr) with a pidfd
// of the child from clone, and returns its Handle. The Handle reaps the
// child: do not call cmd.Wait; use Done and ExitErr. If the child's start
// time cannot be read, the child is killed and reaped and Start fails.
func Start(cmd *exec.Cmd) (*Handle, error) {
	pidfd := -1
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.PidFD = &pidfd
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	pid := cmd.Process.Pid
	if pidfd < 0 {
		// No CLONE_PIDFD: the child is not reaped yet, so its pid is still its own.
		fd, err := unix.PidfdOpen(pid, 0)
		if err != nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			return nil, fmt.Errorf("hold process %d (%s): pidfd_open: %w (it needs Linux 5.3 or later)", pid, cmd.Path, err)
		}
		pidfd = fd
	}
	// The child is not reaped before the watcher runs, so /proc has it.
	st, err := ReadStat(pid)
	if err != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		unix.Close(pidfd)
		return nil, fmt.Errorf("read the start time of process %d (%s): %w", pid, cmd.Path, err)
	}
	return watch(pid, st.StartTime, pidfd, cmd), nil
}

func watch(pid int, startTime uint64, fd int, cmd *exec.Cmd) *Handle {
	// Non-blocking, so that os.NewFile puts it in the runtime's poller.
	_ = unix.SetNonblock(fd, true)
	h := &Handle{
		pid:       pid,
		startTime: startTime,
		fd:        os.NewFile(uintptr(fd), fmt.Sprintf("pidfd:%d", pid)),
		cmd:       cmd,
		done:      make(chan struct{}),
		closing:   make(chan struct{}),
		stopped:   make(chan struct{}),
	}
	go h.watch()
	return h
}

// PID is the process's id.
func (h *Handle) PID() int { return h.pid }

// StartTime is the process's start time (field 22 of /proc/PID/stat).
func (h *Handle) StartTime() uint64 { return h.startTime }

// Done is closed once the process has exited (and, for a child of Start,
// been reaped).
func (h *Handle) Done() <-chan struct{} { return h.done }

// Exited reports whether Done is closed.
func (h *Handle) Exited() bool {
	select {
	case <-h.done:
		return true
	default:
		return false
	}
}

// ExitErr is cmd.Wait's result for a child of Start once Done is closed
// (nil for a clean exit); nil for a process of Open, whose status belongs
// to its parent, and before exit.
func (h *Handle) ExitErr() error {
	if !h.Exited() {
		return nil
	}
	return h.waitErr
}

// Signal sends sig through the pidfd. A process that has exited is not an
// error. After Close, while the process still runs, it fails with
// ErrClosed.
func (h *Handle) Signal(sig syscall.Signal) error {
	if h.Exited() {
		return nil
	}
	rc, err := h.fd.SyscallConn()
	if err != nil {
		return fmt.Errorf("signal process %d: %w", h.pid, err)
	}
	var serr error
	// Control holds the descriptor open while it is used, so a concurrent
	// close cannot redirect the signal.
	if err := rc.Control(func(fd uintptr) { serr = unix.PidfdSendSignal(int(fd), sig, nil, 0) }); err != nil {
		if h.Exited() {
			return nil
		}
		return fmt.Errorf("signal process %d: %w", h.pid, ErrClosed)
	}
	if serr == nil || errors.Is(serr, unix.ESRCH) {
		return nil // ESRCH: already gone
	}
	return fmt.Errorf("signal process %d with %v: %w", h.pid, sig, serr)
}

// Close stops watching a process of Open and releases its pidfd; Done
// then never closes unless it already has. It waits for the watcher to
// return. For a child of Start it does nothing: the watcher must reap the
// child and runs until it exits. Either way the pidfd is released once
// the process has exited.
func (h *Handle) Close() error {
	if h.cmd != nil {
		return nil
	}
	h.closeOnce.Do(func() {
		close(h.closing)
		_ = h.fd.Close()
	})
	<-h.stopped
	return nil
}

// watch waits for the pidfd to turn readable (the process has exited),
// reaps a child, closes done and releases the pidfd; or returns at Close.
// A Handle whose process has exited thus holds no descriptor, Closed or not.
// The wait parks in the runtime's poller, not in a thread.
func (h *Handle) watch() {
	defer close(h.stopped)
	if !h.waitExit() {
		return // closed
	}
	if h.cmd != nil {
		h.waitErr = h.cmd.Wait()
	}
	close(h.done)
	// Signal no longer needs it: an exited process is not signalled.
	_ = h.fd.Close()
}

// pollTick bounds one blocking poll(2) when the pidfd is not in the
// runtime's poller, so that Close is noticed.
const pollTick = 100 // milliseconds

// waitExit reports true once the process has exited, false when the
// Handle was closed first.
func (h *Handle) waitExit() bool {
	rc, err := h.fd.SyscallConn()
	if err != nil {
		return false
	}
	ready := func(timeout int) func(fd uintptr) bool {
		return func(fd uintptr) bool {
			fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
			n, err := unix.Poll(fds, timeout)
			return n > 0 || err != nil && !errors.Is(err, unix.EINTR)
		}
	}
	if err := rc.Read(ready(0)); err == nil {
		return true
	}
	// Closed, or not pollable by the runtime: poll on this thread, a tick
	// at a time.
	for {
		select {
		case <-h.closing:
			return false
		default:
		}
		exited := false
		if err := rc.Control(func(fd uintptr) { exited = ready(pollTick)(fd) }); err != nil {
			return false
		}
		if exited {
			return true
		}
	}
}
