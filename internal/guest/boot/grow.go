package boot

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
)

// GrowSlack is how much larger than its filesystem the root device must be
// before Apply grows the filesystem.
const GrowSlack = 1 << 20

// ErrNoResizeTool is returned by the default resize hook when resize2fs is
// not installed; the grow duty is then skipped, not failed.
var ErrNoResizeTool = errors.New("resize2fs is not installed (looked on PATH, /usr/sbin and /sbin)")

// ErrNotGrowable means the root filesystem is not one Apply can grow: not
// ext2/3/4, or not on a block device. The grow duty is skipped.
var ErrNotGrowable = errors.New("root filesystem cannot be grown")

// RootDevice describes the block device mounted at /.
type RootDevice struct {
	Path   string // device node, e.g. /dev/vda
	Name   string // kernel name, e.g. vda
	FSType string // from mountinfo, e.g. ext4
	Size   int64  // bytes, from /sys/class/block/<name>/size
}

// FindRootDevice finds the device mounted at / from a mountinfo file (the
// last mount on / wins, as it is the visible one), resolves its major:minor
// through <sysDir>/dev/block, and reads its size from
// <sysDir>/class/block/<name>/size. It fails with ErrNotGrowable when the
// root is not an ext2/3/4 filesystem on a block device.
func FindRootDevice(mountInfo, sysDir, devDir string) (RootDevice, error) {
	f, err := os.Open(mountInfo)
	if err != nil {
		return RootDevice{}, fmt.Errorf("read the mount table: %w", err)
	}
	defer f.Close()
	var majmin, fstype string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		mm, mp, ft, ok := parseMountInfoLine(sc.Text())
		if ok && mp == "/" {
			majmin, fstype = mm, ft
		}
	}
	if err := sc.Err(); err != nil {
		return RootDevice{}, fmt.Errorf("read %s: %w", mountInfo, err)
	}
	if majmin == "" {
		return RootDevice{}, fmt.Errorf("%w: nothing is mounted on / according to %s", ErrNotGrowable, mountInfo)
	}
	switch fstype {
	case "ext2", "ext3", "ext4":
	default:
		return RootDevice{}, fmt.Errorf("%w: / is %s, only ext2/3/4 are grown", ErrNotGrowable, fstype)
	}
	target, err := os.Readlink(filepath.Join(sysDir, "dev", "block", majmin))
	if err != nil {
		return RootDevice{}, fmt.Errorf("%w: / is on device %s, which is not a block device (%v)", ErrNotGrowable, majmin, err)
	}
	name := filepath.Base(target)
	sizeFile := filepath.Join(sysDir, "class", "block", name, "size")
	data, err := os.ReadFile(sizeFile)
	if err != nil {
		return RootDevice{}, fmt.Errorf("read the size of %s: %w", name, err)
	}
	sectors, err := strconv.ParseInt(strings.TrimSpace(string(data)), 10, 64)
	if err != nil || sectors < 0 || sectors > (1<<63-1)/512 {
		return RootDevice{}, fmt.Errorf("read the size of %s: %s holds %q, not a sector count", name, sizeFile, strings.TrimSpace(string(data)))
	}
	return RootDevice{Path: filepath.Join(devDir, name), Name: name, FSType: fstype, Size: sectors * 512}, nil
}

// parseMountInfoLine returns the major:minor, mount point and filesystem
// type of one /proc/self/mountinfo line.
func parseMountInfoLine(line string) (majmin, mountPoint, fstype string, ok bool) {
	fields := strings.Fields(line)
	if len(fields) < 7 {
		return "", "", "", false
	}
	sep := -1
	for i := 6; i < len(fields); i++ {
		if fields[i] == "-" {
			sep = i
			break
		}
	}
	if sep < 0 || sep+1 >= len(fields) {
		return "", "", "", false
	}
	return fields[2], unescapeMount(fields[4]), fields[sep+1], true
}

// unescapeMount undoes the kernel's octal escapes (\040 for a blank).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// ext2/3/4 superblock layout (little endian, at byte 1024 of the device).
const (
	sbOffset          = 1024
	sbSize            = 1024
	sbBlocksLo        = 0x04
	sbLogBlockSize    = 0x18
	sbMagic           = 0x38
	sbFeatureIncompat = 0x60
	sbBlocksHi        = 0x150
	extMagic          = 0xEF53
	incompat64Bit     = 0x80
)

// Ext4Size reads the size in bytes of the ext2/3/4 filesystem on r from its
// superblock: the block count (with its high half when the filesystem is
// 64-bit) times the block size.
func Ext4Size(r io.ReaderAt) (int64, error) {
	sb := make([]byte, sbSize)
	if _, err := r.ReadAt(sb, sbOffset); err != nil {
		return 0, fmt.Errorf("read the superblock: %w", err)
	}
	return parseSuperblock(sb)
}

func parseSuperblock(sb []byte) (int64, error) {
	if len(sb) < sbSize {
		return 0, errors.New("superblock is truncated")
	}
	le := binary.LittleEndian
	if m := le.Uint16(sb[sbMagic:]); m != extMagic {
		return 0, fmt.Errorf("no ext2/3/4 superblock (magic %#04x, want %#04x)", m, extMagic)
	}
	logBlock := le.Uint32(sb[sbLogBlockSize:])
	if logBlock > 6 {
		return 0, fmt.Errorf("superblock has an impossible block size (log %d)", logBlock)
	}
	blocks := uint64(le.Uint32(sb[sbBlocksLo:]))
	if le.Uint32(sb[sbFeatureIncompat:])&incompat64Bit != 0 {
		blocks |= uint64(le.Uint32(sb[sbBlocksHi:])) << 32
	}
	bsize := uint64(1024) << logBlock
	if blocks > uint64(1<<63-1)/bsize {
		return 0, fmt.Errorf("superblock announces %d blocks of %d bytes, more than can be addressed", blocks, bsize)
	}
	return int64(blocks * bsize), nil
}

// NeedsGrow reports whether a device of devSize bytes is enough larger than
// its filesystem of fsSize bytes to be worth growing into.
func NeedsGrow(devSize, fsSize int64) bool {
	return devSize-fsSize > GrowSlack
}

// applyGrow grows the root ext4 filesystem online when its device is larger.
func applyGrow(ctx context.Context, s Settings, env *Env) (Status, string, error) {
	if !s.Grow {
		return StatusSkipped, "banger.grow=0", nil
	}
	dev, devSize := env.RootDevice, int64(0)
	if dev == "" {
		rd, err := FindRootDevice(env.MountInfo, env.SysDir, env.DevDir)
		if errors.Is(err, ErrNotGrowable) {
			return StatusSkipped, err.Error(), nil
		}
		if err != nil {
			return StatusFailed, "", err
		}
		dev, devSize = rd.Path, rd.Size
	}
	fsSize, size, err := readSizes(dev)
	if err != nil {
		return StatusFailed, "", err
	}
	if env.RootDevice != "" {
		devSize = size
	}
	if !NeedsGrow(devSize, fsSize) {
		return StatusUnchanged, fmt.Sprintf("filesystem on %s fills its %d bytes", dev, devSize), nil
	}
	if err := env.Resize(ctx, dev); err != nil {
		if errors.Is(err, ErrNoResizeTool) {
			return StatusSkipped, fmt.Sprintf("%s has %d bytes unused but %v", dev, devSize-fsSize, err), nil
		}
		return StatusFailed, "", fmt.Errorf("grow the filesystem on %s from %d to %d bytes: %w", dev, fsSize, devSize, err)
	}
	newSize, _, err := readSizes(dev)
	if err != nil {
		return StatusFailed, "", fmt.Errorf("after resize2fs: %w", err)
	}
	return StatusDone, fmt.Sprintf("grew the filesystem on %s from %d to %d bytes", dev, fsSize, newSize), nil
}

// readSizes returns the filesystem size and the length of dev (a block
// device or an image file).
func readSizes(dev string) (fsSize, devSize int64, err error) {
	f, err := os.Open(dev)
	if err != nil {
		return 0, 0, fmt.Errorf("open the root device: %w", err)
	}
	defer f.Close()
	if fsSize, err = Ext4Size(f); err != nil {
		return 0, 0, fmt.Errorf("%s: %w", dev, err)
	}
	if devSize, err = f.Seek(0, io.SeekEnd); err != nil {
		return 0, 0, fmt.Errorf("find the size of %s: %w", dev, err)
	}
	return fsSize, devSize, nil
}

// resize2fs runs "resize2fs dev", which grows a mounted ext4 filesystem
// online (and an unmounted one offline).
func resize2fs(ctx context.Context, dev string) error {
	tool, err := exec.LookPath("resize2fs")
	if err != nil {
		tool = ""
		for _, p := range []string{"/usr/sbin/resize2fs", "/sbin/resize2fs"} {
			if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() {
				tool = p
				break
			}
		}
		if tool == "" {
			return ErrNoResizeTool
		}
	}
	out, err := exec.CommandContext(ctx, tool, dev).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", tool, dev, err, strings.TrimSpace(string(out)))
	}
	return nil
}
