package qemuproc

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"banger/internal/procwatch"
)

// Adopt re-attaches to a QEMU this package started earlier, typically by a
// previous daemon: pid must still be the process that started at startTime
// (field 22 of /proc/PID/stat, checked after its pidfd is open) and its
// command line must name Dir (the -name marker, or Dir/qmp.sock for a QEMU
// of an older banger). The accelerator and the forwards are read back from
// that command line. Done closes when the process exits (watched through
// the pidfd); Stop works as for a started process, and SIGKILL goes
// through the pidfd, so a reused PID is never signalled. A mismatch is
// ErrNotOurs. Release stops watching without stopping QEMU.
func Adopt(pid int, startTime uint64, dir string) (*Process, error) {
	if pid <= 0 {
		return nil, fmt.Errorf("adopt QEMU: pid %d is not a process id", pid)
	}
	dir = strings.TrimRight(dir, "/")
	h, err := procwatch.Open(pid, startTime)
	switch {
	case errors.Is(err, procwatch.ErrGone):
		return nil, fmt.Errorf("adopt QEMU pid %d: %w: %w (the VM has stopped)", pid, ErrNotOurs, err)
	case errors.Is(err, procwatch.ErrReused):
		return nil, fmt.Errorf("adopt QEMU pid %d: %w: %w (the PID was reused; the VM has stopped)", pid, ErrNotOurs, err)
	case err != nil:
		return nil, fmt.Errorf("adopt QEMU pid %d: %w", pid, err)
	}
	args, err := procwatch.Proc{PID: pid}.Cmdline()
	if err != nil {
		h.Close()
		return nil, fmt.Errorf("adopt QEMU pid %d: read its command line: %w", pid, err)
	}
	if !IsCommandLineOf(args, dir) {
		h.Close()
		return nil, fmt.Errorf("adopt QEMU pid %d: %w: its command line has no -name %q, so it is not the QEMU of %s", pid, ErrNotOurs, NameMarker(dir), dir)
	}
	accel, fwds := describeArgs(args)
	return &Process{
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
		proc:        h,
	}, nil
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

// describeArgs recovers the accelerator and the forwards from a QEMU argv
// this package built.
func describeArgs(args []string) (Accel, []Forward) {
	var accel Accel
	var fwds []Forward
	for i := 0; i+1 < len(args); i++ {
		switch args[i] {
		case "-accel":
			accel = Accel(strings.SplitN(args[i+1], ",", 2)[0])
		case "-netdev":
			for _, opt := range strings.Split(args[i+1], ",") {
				rule, ok := strings.CutPrefix(opt, "hostfwd=tcp:")
				if !ok {
					continue
				}
				// HOSTADDR:HOSTPORT-GUESTADDR:GUESTPORT
				host, guest, ok := strings.Cut(rule, "-")
				if !ok {
					continue
				}
				ha, hp, ok1 := strings.Cut(host, ":")
				_, gp, ok2 := strings.Cut(guest, ":")
				hport, err1 := strconv.Atoi(hp)
				gport, err2 := strconv.Atoi(gp)
				if ok1 && ok2 && err1 == nil && err2 == nil {
					fwds = append(fwds, Forward{HostAddr: ha, HostPort: hport, GuestPort: gport})
				}
			}
		}
	}
	return accel, fwds
}
