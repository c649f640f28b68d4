package dmsnap

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The device-mapper ioctl interface (linux/dm-ioctl.h), version 4.

var dmControlPath = "/dev/mapper/control"

const (
	dmHeaderSize   = 312 // sizeof(struct dm_ioctl)
	dmNameLen      = 128
	dmUUIDLen      = 129
	dmMaxTypeName  = 16
	dmSpecSize     = 40 // sizeof(struct dm_target_spec)
	dmIoctlType    = 0xfd
	dmVersionMajor = 4

	dmVersionCmd          = 0
	dmListDevicesCmd      = 2
	dmDevCreateCmd        = 3
	dmDevRemoveCmd        = 4
	dmDevSuspendCmd       = 6
	dmDevStatusCmd        = 7
	dmTableLoadCmd        = 9
	dmTableStatusCmd      = 12
	dmListVersionsCmd     = 13
	dmGetTargetVersionCmd = 17

	dmReadonlyFlag    = 1 << 0
	dmStatusTableFlag = 1 << 4
	dmBufferFullFlag  = 1 << 8
)

// dmIoctlNum is _IOWR(0xfd, cmd, struct dm_ioctl).
func dmIoctlNum(cmd uint) uint {
	return 3<<30 | dmHeaderSize<<16 | dmIoctlType<<8 | cmd
}

// dmHeader is the decoded struct dm_ioctl.
type dmHeader struct {
	Version     [3]uint32
	DataSize    uint32
	DataStart   uint32
	TargetCount uint32
	OpenCount   int32
	Flags       uint32
	EventNr     uint32
	Dev         uint64
	Name        string
}

var ne = binary.NativeEndian

func (h *dmHeader) encode(buf []byte) {
	for i, v := range h.Version {
		ne.PutUint32(buf[4*i:], v)
	}
	ne.PutUint32(buf[12:], h.DataSize)
	ne.PutUint32(buf[16:], h.DataStart)
	ne.PutUint32(buf[20:], h.TargetCount)
	ne.PutUint32(buf[24:], uint32(h.OpenCount))
	ne.PutUint32(buf[28:], h.Flags)
	ne.PutUint32(buf[32:], h.EventNr)
	ne.PutUint64(buf[40:], h.Dev)
	copy(buf[48:48+dmNameLen-1], h.Name)
}

func decodeHeader(buf []byte) dmHeader {
	var h dmHeader
	for i := range h.Version {
		h.Version[i] = ne.Uint32(buf[4*i:])
	}
	h.DataSize = ne.Uint32(buf[12:])
	h.DataStart = ne.Uint32(buf[16:])
	h.TargetCount = ne.Uint32(buf[20:])
	h.OpenCount = int32(ne.Uint32(buf[24:]))
	h.Flags = ne.Uint32(buf[28:])
	h.EventNr = ne.Uint32(buf[32:])
	h.Dev = ne.Uint64(buf[40:])
	h.Name = cstring(buf[48 : 48+dmNameLen])
	return h
}

func cstring(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}

// dmControl is an open /dev/mapper/control.
type dmControl struct{ fd int }

func openControl() (*dmControl, error) {
	fd, err := unix.Open(dmControlPath, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", dmControlPath, err)
	}
	return &dmControl{fd: fd}, nil
}

func (c *dmControl) Close() error { return unix.Close(c.fd) }

// call runs one dm ioctl on name with payload after the header, growing the
// buffer while the kernel says it is full. It returns the reply header and
// the reply data.
func (c *dmControl) call(cmd uint, name string, flags, targets uint32, payload []byte) (dmHeader, []byte, error) {
	size := max(16<<10, dmHeaderSize+len(payload))
	for {
		buf := make([]byte, size)
		h := dmHeader{
			Version:     [3]uint32{dmVersionMajor, 0, 0},
			DataSize:    uint32(size),
			DataStart:   dmHeaderSize,
			TargetCount: targets,
			Flags:       flags,
			Name:        name,
		}
		h.encode(buf)
		copy(buf[dmHeaderSize:], payload)
		_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(c.fd), uintptr(dmIoctlNum(cmd)), uintptr(unsafe.Pointer(&buf[0])))
		if errno != 0 {
			return dmHeader{}, nil, errno
		}
		out := decodeHeader(buf)
		if out.Flags&dmBufferFullFlag != 0 {
			if size >= 16<<20 {
				return out, nil, fmt.Errorf("device-mapper reply does not fit in %d bytes", size)
			}
			size *= 4
			continue
		}
		start, end := int(out.DataStart), int(out.DataSize)
		if start < dmHeaderSize || end < start || end > len(buf) {
			return out, nil, nil
		}
		return out, buf[start:end], nil
	}
}

// version returns the kernel's device-mapper interface version.
func (c *dmControl) version() ([3]uint32, error) {
	h, _, err := c.call(dmVersionCmd, "", 0, 0, nil)
	return h.Version, err
}

// hasTarget reports whether the kernel has (or can load) the target type.
func (c *dmControl) hasTarget(target string) (bool, error) {
	_, _, err := c.call(dmGetTargetVersionCmd, target, 0, 0, nil)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, unix.EINVAL):
		return false, nil
	case !errors.Is(err, unix.ENOTTY):
		return false, err
	}
	// Before Linux 5.4: list the loaded targets.
	_, data, err := c.call(dmListVersionsCmd, "", 0, 0, nil)
	if err != nil {
		return false, err
	}
	for _, name := range parseTargetVersions(data) {
		if name == target {
			return true, nil
		}
	}
	return false, nil
}

// parseTargetVersions reads a list of struct dm_target_versions.
func parseTargetVersions(data []byte) []string {
	var names []string
	for off := 0; off+16 <= len(data); {
		next := int(ne.Uint32(data[off:]))
		names = append(names, cstring(data[off+16:]))
		if next <= 0 || off+next <= off {
			break
		}
		off += next
	}
	return names
}

// create makes the device name with no table and returns its device number.
func (c *dmControl) create(name string) (uint64, error) {
	h, _, err := c.call(dmDevCreateCmd, name, 0, 0, nil)
	return h.Dev, err
}

// target is one line of a dm table.
type target struct {
	Start, Length uint64 // sectors
	Type          string
	Params        string
}

// encodeTargets builds the payload of DM_TABLE_LOAD.
func encodeTargets(ts []target) []byte {
	var out []byte
	for _, t := range ts {
		n := dmSpecSize + len(t.Params) + 1
		n = (n + 7) &^ 7
		spec := make([]byte, n)
		ne.PutUint64(spec[0:], t.Start)
		ne.PutUint64(spec[8:], t.Length)
		ne.PutUint32(spec[20:], uint32(n)) // next: from this spec to the next
		copy(spec[24:24+dmMaxTypeName-1], t.Type)
		copy(spec[dmSpecSize:], t.Params)
		out = append(out, spec...)
	}
	return out
}

// parseTargets reads the reply of DM_TABLE_STATUS: count specs whose next
// fields are offsets from the start of data.
func parseTargets(data []byte, count uint32) ([]target, error) {
	var ts []target
	off := 0
	for i := uint32(0); i < count; i++ {
		if off < 0 || off+dmSpecSize > len(data) {
			return nil, fmt.Errorf("device-mapper table reply truncated at target %d", i)
		}
		ts = append(ts, target{
			Start:  ne.Uint64(data[off:]),
			Length: ne.Uint64(data[off+8:]),
			Type:   cstring(data[off+24 : off+24+dmMaxTypeName]),
			Params: cstring(data[off+dmSpecSize:]),
		})
		next := int(ne.Uint32(data[off+20:]))
		if next <= off && i+1 < count {
			return nil, fmt.Errorf("device-mapper table reply has a bad offset at target %d", i)
		}
		off = next
	}
	return ts, nil
}

// load loads the inactive table of name.
func (c *dmControl) load(name string, ts []target, readOnly bool) error {
	var flags uint32
	if readOnly {
		flags |= dmReadonlyFlag
	}
	_, _, err := c.call(dmTableLoadCmd, name, flags, uint32(len(ts)), encodeTargets(ts))
	return err
}

// resume makes the loaded table live (DM_DEV_SUSPEND without the suspend flag).
func (c *dmControl) resume(name string) error {
	_, _, err := c.call(dmDevSuspendCmd, name, 0, 0, nil)
	return err
}

// remove removes the device.
func (c *dmControl) remove(name string) error {
	_, _, err := c.call(dmDevRemoveCmd, name, 0, 0, nil)
	return err
}

// status returns the device's header (device number, open count); ENXIO
// when there is no such device.
func (c *dmControl) status(name string) (dmHeader, error) {
	h, _, err := c.call(dmDevStatusCmd, name, 0, 0, nil)
	return h, err
}

// table returns the live table of name.
func (c *dmControl) table(name string) ([]target, error) {
	h, data, err := c.call(dmTableStatusCmd, name, dmStatusTableFlag, 0, nil)
	if err != nil {
		return nil, err
	}
	return parseTargets(data, h.TargetCount)
}

// dmDevice is one entry of DM_LIST_DEVICES.
type dmDevice struct {
	Name string
	Dev  uint64
}

// list returns every device-mapper device.
func (c *dmControl) list() ([]dmDevice, error) {
	_, data, err := c.call(dmListDevicesCmd, "", 0, 0, nil)
	if err != nil {
		return nil, err
	}
	return parseNameList(data), nil
}

// parseNameList reads a list of struct dm_name_list (dev u64, next u32,
// name); next is the offset from this record to the next, 0 at the end.
func parseNameList(data []byte) []dmDevice {
	var out []dmDevice
	for off := 0; off+12 <= len(data); {
		dev := ne.Uint64(data[off:])
		next := int(ne.Uint32(data[off+8:]))
		if dev == 0 && off == 0 {
			break // no devices
		}
		out = append(out, dmDevice{Name: cstring(data[off+12:]), Dev: dev})
		if next <= 0 {
			break
		}
		off += next
	}
	return out
}
