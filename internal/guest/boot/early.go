package boot

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"banger/internal/guest/initrd"
)

// EarlyAgentFile is initrd.EarlyAgentFile: where banger's initramfs
// records the agent it started before systemd.
const EarlyAgentFile = initrd.EarlyAgentFile

// EarlyAgent reads the early agent's pid from file (EarlyAgentFile): 0
// when there is none, or when that process, under procDir (/proc), is no
// longer the one recorded (another start time: the pid was reused), has
// exited (a zombie), or does not run a program whose name starts like comm
// (the kernel truncates it to 15 bytes).
func EarlyAgent(file, procDir, comm string) int {
	b, err := os.ReadFile(file)
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) == 0 || len(f) > 2 {
		return 0
	}
	pid, err := strconv.Atoi(f[0])
	if err != nil || pid <= 1 {
		return 0
	}
	// The start time the initramfs recorded (initrd.EarlyAgentRecord): the
	// file outlives the agent, and a pid given to another process later
	// has another start time. An agent that exited and is not yet reaped
	// (a zombie) no longer serves.
	if state, start, err := initrd.ProcState(procDir, pid); err != nil || state == 'Z' {
		return 0
	} else if len(f) == 2 && f[1] != strconv.FormatUint(start, 10) {
		return 0
	}
	c, err := os.ReadFile(fmt.Sprintf("%s/%d/comm", procDir, pid))
	if err != nil {
		return 0
	}
	name := strings.TrimSpace(string(c))
	if name == "" || !strings.HasPrefix(comm, name) {
		return 0
	}
	return pid
}

// WaitEarlyAgent waits, polling every poll, until alive says the early
// agent is gone or ctx ends.
func WaitEarlyAgent(ctx context.Context, alive func() bool, poll time.Duration) error {
	for alive() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(poll):
		}
	}
	return nil
}

// WaitEarlyAgentExit waits until process pid exits or ctx ends, without
// waking up meanwhile (the unit's agent waits like this for the VM's
// whole life): a pidfd becomes readable when its process exits. alive is
// asked once the pidfd is open, so that pid is still the early agent and
// not a later process. Where pidfds are missing it polls alive every poll.
// On ctx's end the goroutine that waits is left to the process's exit,
// which follows.
func WaitEarlyAgentExit(ctx context.Context, pid int, alive func() bool, poll time.Duration) error {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return WaitEarlyAgent(ctx, alive, poll)
	}
	if !alive() {
		unix.Close(fd)
		return nil
	}
	exited := make(chan error, 1)
	go func() {
		defer unix.Close(fd)
		for {
			_, err := unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, -1)
			if err != unix.EINTR {
				exited <- err
				return
			}
		}
	}()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case err := <-exited:
		if err != nil {
			return WaitEarlyAgent(ctx, alive, poll)
		}
		return nil
	}
}
