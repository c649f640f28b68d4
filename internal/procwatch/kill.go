package procwatch

import (
	"context"
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Kill SIGKILLs every process, other than this one and its parent, for
// which match returns true, then waits until they have exited, at most
// wait and not past ctx. It returns the pids it killed, and an error joining the kills
// that failed and the processes still running when the wait ended.
//
// Each candidate is held by a pidfd before match looks at it, and its
// start time is read before and after match: the signal goes through the
// pidfd, so it reaches the process match approved or, if that one has
// exited meanwhile, nothing.
func Kill(ctx context.Context, match func(Proc) bool, wait time.Duration) ([]int, error) {
	procs, err := Scan()
	if err != nil {
		return nil, err
	}
	// Neither this process nor its parent (the shell, CLI or service
	// manager that started it) is ever a stray, whatever match says: a
	// parent whose working directory or command line names a leftover
	// path must not be killed by its own child.
	self, parent := os.Getpid(), os.Getppid()
	var (
		killed []int
		held   []int // pidfds of the killed processes
		errs   []error
	)
	defer func() {
		for _, fd := range held {
			unix.Close(fd)
		}
	}()
	for _, p := range procs {
		if p.PID == self || p.PID == parent {
			continue
		}
		fd, err := killOne(p, match)
		if err != nil {
			errs = append(errs, err)
		}
		if fd >= 0 {
			held = append(held, fd)
			killed = append(killed, p.PID)
		}
	}
	errs = append(errs, waitAll(ctx, held, killed, wait)...)
	return killed, errors.Join(errs...)
}

// KillMatching is Kill without a context or errors: it returns how many
// processes it killed.
func KillMatching(match func(Proc) bool, wait time.Duration) int {
	pids, _ := Kill(context.Background(), match, wait)
	return len(pids)
}

// killOne kills p if match approves it, and returns its pidfd then (-1
// when it did not kill it).
func killOne(p Proc, match func(Proc) bool) (int, error) {
	fd, err := unix.PidfdOpen(p.PID, 0) // always close-on-exec
	if err != nil {
		return -1, nil // gone
	}
	before, err := p.Stat()
	if err != nil || before.Exited() || !match(p) {
		unix.Close(fd)
		return -1, nil
	}
	if after, err := p.Stat(); err != nil || after.StartTime != before.StartTime {
		unix.Close(fd)
		return -1, nil // the one match saw has gone
	}
	if err := unix.PidfdSendSignal(fd, syscall.SIGKILL, nil, 0); err != nil {
		unix.Close(fd)
		if errors.Is(err, unix.ESRCH) {
			return -1, nil
		}
		return -1, fmt.Errorf("kill process %d (%s): %w", p.PID, p.CmdlineString(), err)
	}
	return fd, nil
}

// waitAll waits until every pidfd in fds (of pids) is readable: its
// process has exited. It returns an error for each still running when
// wait or ctx ends.
func waitAll(ctx context.Context, fds []int, pids []int, wait time.Duration) []error {
	deadline := time.Now().Add(wait)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	left := map[int]int{} // pid: pidfd
	for i, f := range fds {
		left[pids[i]] = f
	}
	for len(left) > 0 && ctx.Err() == nil {
		remain := time.Until(deadline)
		if remain <= 0 {
			break
		}
		var polls []unix.PollFd
		var order []int
		for pid, fd := range left {
			polls = append(polls, unix.PollFd{Fd: int32(fd), Events: unix.POLLIN})
			order = append(order, pid)
		}
		// A slice at a time, so that ctx is noticed.
		n, err := unix.Poll(polls, int(min(remain, 100*time.Millisecond)/time.Millisecond)+1)
		if err != nil && !errors.Is(err, unix.EINTR) {
			return []error{fmt.Errorf("wait for killed processes: poll: %w", err)}
		}
		for i := 0; n > 0 && i < len(polls); i++ {
			if polls[i].Revents != 0 {
				delete(left, order[i])
			}
		}
	}
	var errs []error
	for pid := range left {
		errs = append(errs, fmt.Errorf("process %d still runs %s after SIGKILL (stuck in the kernel?); check `cat /proc/%d/stack`", pid, wait, pid))
	}
	return errs
}
