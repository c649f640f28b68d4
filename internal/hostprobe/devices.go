package hostprobe

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Device nodes the probes look at.
const (
	TUNDevice   = "/dev/net/tun"
	LoopControl = "/dev/loop-control"
	DMControl   = "/dev/mapper/control"
)

// TUN is what opening /dev/net/tun found: a VMM running as this user opens
// it to attach to its tap, whoever made the tap.
type TUN struct {
	Present bool
	// Err is why it does not open read-write, or nil.
	Err error
	// UID is the user that tried.
	UID int
}

// Usable reports whether a VMM running as this user can attach to a tap.
func (t TUN) Usable() bool { return t.Err == nil }

// Problem is nil when the tun device is usable, else the error bangerd
// gives for it.
func (t TUN) Problem() error {
	if t.Err == nil {
		return nil
	}
	return fmt.Errorf("a VMM running as uid %d cannot open %s to attach to its tap (%w); `sudo chmod 0666 %s` is the kernel's usual mode", t.UID, TUNDevice, t.Err, TUNDevice)
}

// ProbeTUN opens /dev/net/tun read-write, as a VMM does.
func ProbeTUN(h Host) TUN {
	t := TUN{UID: h.UID}
	f, err := os.OpenFile(h.PathOf(TUNDevice), os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Present = !errors.Is(err, os.ErrNotExist)
		t.Err = err
		return t
	}
	t.Present = true
	f.Close()
	return t
}

// ErrNoSnapshots is wrapped by DeviceMapper.Err when this host cannot make
// device-mapper snapshots.
var ErrNoSnapshots = errors.New("device-mapper snapshots are not available on this host")

// dmFix is what to do when the control node exists but device-mapper does
// not answer through it (a node left without its driver, say).
const dmFix = `load the device-mapper modules (modprobe dm_mod dm_snapshot), or set cow = "copy" (or "auto") in the config`

// DeviceMapper is what probing device-mapper snapshots found.
type DeviceMapper struct {
	// Loop: /dev/loop-control exists. Control: /dev/mapper/control
	// exists. Target: the snapshot target is loaded or loadable (asked
	// through the control node where it opens, else /sys/module/dm_snapshot).
	Loop, Control, Target bool
	// DMErr is why device-mapper itself cannot make snapshots for this
	// process (missing, needs root, not answering, no snapshot target),
	// NeedsRoot when only the permission to open the control node is
	// missing. Err adds missing loop devices: it is why this process
	// cannot make snapshots here. Both wrap ErrNoSnapshots.
	DMErr     error
	NeedsRoot bool
	Err       error
}

// ProbeDeviceMapper checks, as dmsnap does before making a snapshot, loop
// devices, /dev/mapper/control (opened read-write, which needs root), the
// driver's answer through it, and the snapshot target. Under a fake root
// the node is opened but not asked, and the target is /sys/module/dm_snapshot.
func ProbeDeviceMapper(h Host) DeviceMapper {
	d := DeviceMapper{Loop: h.Exists(LoopControl), Control: h.Exists(DMControl)}
	d.Target = h.Exists("/sys/module/dm_snapshot")
	d.DMErr = d.probeControl(h)
	d.Err = d.DMErr
	if !d.Loop {
		d.Err = fmt.Errorf("%w: no loop devices (%s is missing); load the loop module (modprobe loop)", ErrNoSnapshots, LoopControl)
	}
	return d
}

// probeControl opens the control node and, on the real host, asks the
// driver its version and for the snapshot target.
func (d *DeviceMapper) probeControl(h Host) error {
	fd, err := unix.Open(h.PathOf(DMControl), unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		d.NeedsRoot = errors.Is(err, unix.EACCES) || errors.Is(err, unix.EPERM)
		return h.explainDMOpen(err)
	}
	defer unix.Close(fd)
	if h.Real() {
		if err := dmCall(fd, dmVersionCmd, ""); err != nil {
			return fmt.Errorf("%w: device-mapper is not usable on this host (version ioctl on %s: %v): %s", ErrNoSnapshots, DMControl, err, dmFix)
		}
		// DM_GET_TARGET_VERSION loads the target's module when it can;
		// kernels before 5.4 do not know it, and then only sysfs tells.
		switch err := dmCall(fd, dmGetTargetVersionCmd, "snapshot"); {
		case err == nil:
			d.Target = true
		case errors.Is(err, unix.EINVAL):
			d.Target = false
		}
	}
	if !d.Target {
		return fmt.Errorf("%w: device-mapper has no snapshot target; load it with modprobe dm_snapshot", ErrNoSnapshots)
	}
	return nil
}

// explainDMOpen says why opening the control node failed, and whether the
// kernel has device-mapper at all.
func (h Host) explainDMOpen(err error) error {
	switch {
	case errors.Is(err, unix.ENOENT) && !h.kernelHasDM():
		return fmt.Errorf("%w: no device-mapper: %s does not exist and the kernel lists no device-mapper in /proc/misc; load it with modprobe dm_mod (the module may not exist in this kernel)", ErrNoSnapshots, DMControl)
	case errors.Is(err, unix.ENOENT):
		return fmt.Errorf("%w: the kernel has device-mapper but %s is missing; create it with dmsetup mknodes", ErrNoSnapshots, DMControl)
	case errors.Is(err, unix.EACCES) || errors.Is(err, unix.EPERM):
		return fmt.Errorf("%w: open %s: %v; device-mapper needs root (CAP_SYS_ADMIN)", ErrNoSnapshots, DMControl, err)
	}
	return fmt.Errorf("%w: device-mapper is not usable on this host (open %s: %v): %s", ErrNoSnapshots, DMControl, err, dmFix)
}

// kernelHasDM reports whether /proc/misc lists device-mapper.
func (h Host) kernelHasDM() bool {
	b, err := os.ReadFile(h.PathOf("/proc/misc"))
	if err != nil {
		return false
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) == 2 && f[1] == "device-mapper" {
			return true
		}
	}
	return false
}

// The two device-mapper ioctls the probe makes, on a struct dm_ioctl of
// 312 bytes: version at 0, data_size at 12, data_start at 16, name at 48.
const (
	dmHeaderSize          = 312
	dmVersionCmd          = 0
	dmGetTargetVersionCmd = 17
	dmIoctlBase           = 0xC138FD00 // _IOWR(0xfd, 0, struct dm_ioctl)
)

// dmCall makes the device-mapper ioctl cmd with name and no payload.
func dmCall(fd int, cmd uint, name string) error {
	buf := make([]byte, 16<<10)
	ne := binary.NativeEndian
	ne.PutUint32(buf[0:], 4) // interface version 4.0.0
	ne.PutUint32(buf[12:], uint32(len(buf)))
	ne.PutUint32(buf[16:], dmHeaderSize)
	copy(buf[48:48+127], name)
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), uintptr(dmIoctlBase|cmd), uintptr(unsafe.Pointer(&buf[0])))
	if errno != 0 {
		return errno
	}
	return nil
}
