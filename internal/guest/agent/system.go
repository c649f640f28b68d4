package agent

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/mdlayher/vsock"
	"golang.org/x/sys/unix"
)

// SystemPowerOff flushes file systems and powers the machine off. It only
// returns on failure. It is meant for Options.PowerOff in the guest.
func SystemPowerOff() error {
	unix.Sync()
	return unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
}

// SystemReboot flushes file systems and restarts the machine. It only
// returns on failure. It is meant for Options.Reboot in the guest.
func SystemReboot() error {
	unix.Sync()
	return unix.Reboot(unix.LINUX_REBOOT_CMD_RESTART)
}

// SystemSetClock sets the real-time clock. It is meant for Options.SetClock.
func SystemSetClock(t time.Time) error {
	ts := unix.NsecToTimespec(t.UnixNano())
	return unix.ClockSettime(unix.CLOCK_REALTIME, &ts)
}

// ListenVsock listens on an AF_VSOCK port for streams from the host.
func ListenVsock(port uint32) (net.Listener, error) {
	ln, err := vsock.Listen(port, nil)
	if err != nil {
		return nil, fmt.Errorf("listen on vsock port %d (is the vsock driver loaded?): %w", port, err)
	}
	return ln, nil
}

// FindSerialPort returns the device node of the virtio-serial port called
// name, by reading <sysDir>/class/virtio-ports/*/name and joining the
// matching port's directory name to devDir. In a guest, sysDir is "/sys" and
// devDir is "/dev"; no udev link is needed.
func FindSerialPort(sysDir, devDir, name string) (string, error) {
	dirs, err := filepath.Glob(filepath.Join(sysDir, "class", "virtio-ports", "*", "name"))
	if err != nil {
		return "", err
	}
	for _, p := range dirs {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		if strings.TrimSpace(string(b)) == name {
			dev := filepath.Join(devDir, filepath.Base(filepath.Dir(p)))
			if _, err := os.Stat(dev); err != nil {
				return "", fmt.Errorf("virtio-serial port %q is %s but its device node is missing: %w", name, filepath.Base(filepath.Dir(p)), err)
			}
			return dev, nil
		}
	}
	return "", fmt.Errorf("no virtio-serial port named %q under %s: %w", name, filepath.Join(sysDir, "class", "virtio-ports"), ErrNoSerialPort)
}

// ErrNoSerialPort is matched (errors.Is) by FindSerialPort's error when no
// port of that name exists, e.g. under Firecracker, where vsock is used.
var ErrNoSerialPort = errors.New("port not found")
