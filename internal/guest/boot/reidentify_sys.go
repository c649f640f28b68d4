package boot

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unsafe"

	"banger/internal/procwatch"

	"golang.org/x/sys/unix"
)

// The random device's ioctls (linux/random.h), which x/sys/unix does not
// name: RNDADDENTROPY is _IOW('R', 0x03, int[2]), RNDRESEEDCRNG is
// _IO('R', 0x07).
const (
	rndAddEntropy = 0x40085203
	rndReseedCRNG = 0x5207
)

// SystemAddEntropy writes seed into the kernel's input pool through
// /dev/random's RNDADDENTROPY ioctl, crediting 8 bits per byte, and then
// asks the kernel to reseed its generator from the pool at once
// (RNDRESEEDCRNG, Linux 4.17 and later) instead of at its next scheduled
// reseed. Both need CAP_SYS_ADMIN. It is meant for ResumeEnv.AddEntropy.
func SystemAddEntropy(seed []byte) error {
	return addEntropy("/dev/random", seed)
}

func addEntropy(dev string, seed []byte) error {
	if len(seed) == 0 {
		return errors.New("no entropy to add")
	}
	f, err := os.OpenFile(dev, os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", dev, err)
	}
	defer f.Close()
	// struct rand_pool_info { int entropy_count; int buf_size; __u32 buf[]; }
	info := make([]byte, 8+(len(seed)+3)/4*4)
	binary.NativeEndian.PutUint32(info[0:], uint32(len(seed)*8))
	binary.NativeEndian.PutUint32(info[4:], uint32(len(seed)))
	copy(info[8:], seed)
	rc, err := f.SyscallConn()
	if err != nil {
		return fmt.Errorf("%s: %w", dev, err)
	}
	var ioErr error
	cerr := rc.Control(func(fd uintptr) {
		if _, _, e := unix.Syscall(unix.SYS_IOCTL, fd, rndAddEntropy, uintptr(unsafe.Pointer(&info[0]))); e != 0 {
			ioErr = fmt.Errorf("RNDADDENTROPY on %s: %w", dev, e)
			return
		}
		if _, _, e := unix.Syscall(unix.SYS_IOCTL, fd, rndReseedCRNG, 0); e != 0 {
			ioErr = fmt.Errorf("RNDRESEEDCRNG on %s: %w", dev, e)
		}
	})
	runtime.KeepAlive(info)
	clear(info)
	if cerr != nil {
		return fmt.Errorf("%s: %w", dev, cerr)
	}
	return ioErr
}

// SystemSetClock steps the real-time clock to t. It is meant for
// ResumeEnv.SetClock.
func SystemSetClock(t time.Time) error {
	ts := unix.NsecToTimespec(t.UnixNano())
	return unix.ClockSettime(unix.CLOCK_REALTIME, &ts)
}

// ReloadSSHD sends SIGHUP to the sshd whose pid is in pidFile: sshd then
// executes itself again and loads its host keys afresh, keeping the
// connections it has. It returns false (and no error) when the file is
// missing or names a process that is gone or is not sshd. The signal goes
// through a pidfd held on the process whose start time was read, so it
// never reaches a process that took over a stale pid.
func ReloadSSHD(pidFile string) (bool, error) {
	data, err := os.ReadFile(pidFile)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("read %s: %w", pidFile, err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil || pid <= 1 {
		return false, fmt.Errorf("%s holds %q, not a pid", pidFile, strings.TrimSpace(string(data)))
	}
	st, err := procwatch.ReadStat(pid)
	if err != nil || st.Exited() || st.Comm != "sshd" {
		return false, nil // a stale pid file
	}
	h, err := procwatch.Open(pid, st.StartTime)
	if errors.Is(err, procwatch.ErrGone) || errors.Is(err, procwatch.ErrReused) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("hold sshd (pid %d): %w", pid, err)
	}
	defer h.Close()
	if err := h.Signal(syscall.SIGHUP); err != nil {
		return false, fmt.Errorf("send SIGHUP to sshd (pid %d): %w", pid, err)
	}
	return true, nil
}
