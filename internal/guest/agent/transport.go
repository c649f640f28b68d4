package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// The serve loops below keep a guest's agent reachable for the guest's
// whole life: a transport that is not there yet (the vsock driver still
// loading, no host attached to the serial port) or that fails is opened
// again, with a growing pause, until ctx ends. Each returns nil when ctx
// ended it. Problems go to Options.Logf, each once until it changes.

// ServeVsock serves on AF_VSOCK port, listening again whenever the
// listener cannot be opened or fails.
func ServeVsock(ctx context.Context, port uint32, opts Options) error {
	opts.fill()
	var b backoff
	lastErr := ""
	for {
		ln, err := ListenVsock(port)
		if err != nil {
			if msg := err.Error(); msg != lastErr {
				opts.Logf("%v; retrying", err)
				lastErr = msg
			}
			if !b.wait(ctx) {
				return nil
			}
			continue
		}
		lastErr = ""
		b.reset()
		opts.Logf("serving on vsock port %d", port)
		err = Serve(ctx, ln, opts)
		if ctx.Err() != nil {
			return nil
		}
		opts.Logf("vsock listener failed: %v; listening again", err)
		if !b.wait(ctx) {
			return nil
		}
	}
}

// ServeSerial runs the multiplexed protocol (ServeMux) on the virtio-serial
// port called name, found under sysDir and devDir ("/sys" and "/dev" in a
// guest, see FindSerialPort), creating its device node when it is missing,
// and opening the port again whenever the session ends.
func ServeSerial(ctx context.Context, sysDir, devDir, name string, opts Options) error {
	opts.fill()
	var b backoff
	lastErr := ""
	waiting := false
	for {
		if err := EnsureSerialPortNode(sysDir, devDir, name); err != nil {
			opts.Logf("%v", err)
		}
		dev, err := FindSerialPort(sysDir, devDir, name)
		var f *os.File
		if err == nil {
			f, err = os.OpenFile(dev, os.O_RDWR|unix.O_NOCTTY, 0)
		}
		if err != nil {
			if msg := err.Error(); msg != lastErr {
				opts.Logf("open the virtio-serial port: %v; retrying", err)
				lastErr = msg
			}
			if !b.wait(ctx) {
				return nil
			}
			continue
		}
		lastErr = ""
		// While no host is attached, each open ends at once with EOF; say
		// so once, not on every retry.
		if !waiting {
			opts.Logf("serving on %s", dev)
		}
		started := time.Now()
		err = ServeMux(ctx, f, opts)
		f.Close()
		if ctx.Err() != nil {
			return nil
		}
		short := time.Since(started) < time.Second
		if !short || !waiting {
			opts.Logf("%v; reopening %s", err, dev)
		}
		waiting = short
		if time.Since(started) > 5*time.Second {
			b.reset()
		}
		if !b.wait(ctx) {
			return nil
		}
	}
}

// ServeUnix serves on a Unix socket at path (replacing whatever is there)
// until ctx ends, then removes it. It lets tests run the agent outside a
// guest.
func ServeUnix(ctx context.Context, path string, opts Options) error {
	opts.fill()
	os.Remove(path)
	ln, err := net.Listen("unix", path)
	if err != nil {
		return fmt.Errorf("listen on the Unix socket %s: %w", path, err)
	}
	defer os.Remove(path)
	opts.Logf("serving on unix:%s", path)
	return Serve(ctx, ln, opts)
}

// backoff sleeps before the next attempt, longer each time up to 2s.
type backoff struct{ d time.Duration }

// wait returns false when ctx ended the wait.
func (b *backoff) wait(ctx context.Context) bool {
	b.d = min(max(2*b.d, 100*time.Millisecond), 2*time.Second)
	t := time.NewTimer(b.d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

func (b *backoff) reset() { b.d = 0 }

// EnsureSerialPortNode creates the device node of the virtio-serial port
// called name when it is missing (no udev, no devtmpfs node yet), from the
// major:minor in <sysDir>/class/virtio-ports/<port>/dev. A port that is not
// there at all is no error: FindSerialPort says so.
func EnsureSerialPortNode(sysDir, devDir, name string) error {
	names, _ := filepath.Glob(filepath.Join(sysDir, "class", "virtio-ports", "*", "name"))
	for _, p := range names {
		b, err := os.ReadFile(p)
		if err != nil || strings.TrimSpace(string(b)) != name {
			continue
		}
		port := filepath.Base(filepath.Dir(p))
		node := filepath.Join(devDir, port)
		if _, err := os.Stat(node); err == nil {
			return nil
		}
		devFile := filepath.Join(filepath.Dir(p), "dev")
		mm, err := os.ReadFile(devFile)
		if err != nil {
			return fmt.Errorf("virtio-serial port %s has no device node and its number cannot be read: %w", port, err)
		}
		maj, mnr, ok := strings.Cut(strings.TrimSpace(string(mm)), ":")
		ma, err1 := strconv.ParseUint(maj, 10, 32)
		mi, err2 := strconv.ParseUint(mnr, 10, 32)
		if !ok || err1 != nil || err2 != nil {
			return fmt.Errorf("virtio-serial port %s: %s holds %q, not major:minor", port, devFile, strings.TrimSpace(string(mm)))
		}
		if err := unix.Mknod(node, unix.S_IFCHR|0o600, int(unix.Mkdev(uint32(ma), uint32(mi)))); err != nil && !errors.Is(err, os.ErrExist) {
			return fmt.Errorf("create the device node %s (%d:%d): %w", node, ma, mi, err)
		}
		return nil
	}
	return nil
}
