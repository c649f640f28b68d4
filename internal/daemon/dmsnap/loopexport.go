package dmsnap

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// AttachLoop binds path to a free loop device (read-only when readOnly),
// under m's lock, and returns the device, /dev/loopN. Unlike the loop
// devices under a snapshot it has no autoclear: it stays bound until
// DetachLoop, even after this process exits, so that another process can
// be handed the device.
func (m *Manager) AttachLoop(ctx context.Context, path string, readOnly bool) (string, error) {
	unlock, err := m.lock(ctx)
	if err != nil {
		return "", err
	}
	defer unlock()
	l, err := attachLoop(path, readOnly)
	if err != nil {
		return "", err
	}
	defer l.release()
	info, err := unix.IoctlLoopGetStatus64(l.fd)
	if err == nil {
		info.Flags &^= unix.LO_FLAGS_AUTOCLEAR
		err = unix.IoctlLoopSetStatus64(l.fd, info)
	}
	if err != nil {
		_ = l.detach()
		return "", fmt.Errorf("keep %s bound to %s (clearing autoclear): %w", l.Path, path, err)
	}
	return l.Path, nil
}

// DetachLoop unbinds the loop device dev (/dev/loopN), under m's lock. A
// device that is not bound is not an error. If something still has the
// device open, the kernel unbinds it when that closes.
func (m *Manager) DetachLoop(ctx context.Context, dev string) error {
	n, ok := strings.CutPrefix(dev, "/dev/loop")
	if _, err := strconv.Atoi(n); !ok || err != nil {
		return fmt.Errorf("detach %q: not a loop device path (/dev/loopN)", dev)
	}
	unlock, err := m.lock(ctx)
	if err != nil {
		return err
	}
	defer unlock()
	fd, err := unix.Open(dev, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("open %s to detach it: %w", dev, err)
	}
	defer unix.Close(fd)
	if err := unix.IoctlSetInt(fd, unix.LOOP_CLR_FD, 0); err != nil && !errors.Is(err, unix.ENXIO) {
		return fmt.Errorf("detach %s: %w", dev, err)
	}
	return nil
}

// LoopBacking returns the file bound to the loop device dev as the kernel
// reports it (with a " (deleted)" suffix cut off), or "" when dev is not
// bound.
func LoopBacking(dev string) (string, error) {
	n, ok := strings.CutPrefix(dev, "/dev/loop")
	if _, err := strconv.Atoi(n); !ok || err != nil {
		return "", fmt.Errorf("%q is not a loop device path (/dev/loopN)", dev)
	}
	b, err := os.ReadFile("/sys/block/loop" + n + "/loop/backing_file")
	if errors.Is(err, os.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("read the backing file of %s: %w", dev, err)
	}
	return strings.TrimSuffix(strings.TrimSpace(string(b)), " (deleted)"), nil
}
