package boot

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// DutyMounts is the step MountBasics reports.
const DutyMounts = "mounts"

// Mount is one filesystem a guest needs before anything else runs.
type Mount struct {
	Source string
	Target string // absolute, inside the guest
	FSType string
	Flags  uintptr
	Data   string
}

// BasicMounts are the filesystems a guest without an init system needs,
// in the order they are mounted: /proc first (the others are found through
// its mount table), /dev before /dev/pts.
var BasicMounts = []Mount{
	{"proc", "/proc", "proc", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, ""},
	{"sysfs", "/sys", "sysfs", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, ""},
	{"devtmpfs", "/dev", "devtmpfs", unix.MS_NOSUID, "mode=0755"},
	{"devpts", "/dev/pts", "devpts", unix.MS_NOSUID | unix.MS_NOEXEC, "mode=0620,gid=5"},
	{"tmpfs", "/run", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=0755"},
}

// MountBasics does in-process what the shell init of a guest without an
// init system would do with one mount command each: it remounts root (""
// means /) read-write when it is read-only, then mounts under it every one
// of mounts whose target is not a mount point yet, making the directory
// when missing. What is already mounted is left alone, so running it twice
// changes nothing. A failed mount does not stop the others; the step lists
// every failure.
func MountBasics(root string, mounts []Mount) Step {
	if root == "" {
		root = "/"
	}
	var did []string
	var errs []error
	var st unix.Statfs_t
	if err := unix.Statfs(root, &st); err != nil {
		errs = append(errs, fmt.Errorf("check whether %s is read-only: %w", root, err))
	} else if st.Flags&unix.ST_RDONLY != 0 {
		// A remount takes the mount's flags anew: keep the ones it has.
		keep := uintptr(st.Flags) & (unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC | unix.MS_SYNCHRONOUS |
			unix.MS_MANDLOCK | unix.MS_NOATIME | unix.MS_NODIRATIME | unix.MS_RELATIME)
		if err := unix.Mount("", root, "", unix.MS_REMOUNT|keep, ""); err != nil {
			errs = append(errs, fmt.Errorf("remount %s read-write: %w", root, err))
		} else {
			did = append(did, root+" read-write")
		}
	}
	// The mount table is read once /proc is there, and kept up to date
	// with what is mounted here.
	mountInfo := filepath.Join(root, "proc", "self", "mountinfo")
	points, _ := mountPoints(mountInfo)
	for _, m := range mounts {
		target := filepath.Join(root, m.Target)
		if points[target] {
			continue
		}
		if err := os.MkdirAll(target, 0o755); err != nil {
			errs = append(errs, fmt.Errorf("create the mount point %s: %w", target, err))
			continue
		}
		if err := unix.Mount(m.Source, target, m.FSType, m.Flags, m.Data); err != nil {
			errs = append(errs, fmt.Errorf("mount %s on %s: %w", m.FSType, target, err))
			continue
		}
		did = append(did, m.Target)
		if points == nil {
			points, _ = mountPoints(mountInfo)
		}
		if points != nil {
			points[target] = true
		}
	}
	step := Step{Duty: DutyMounts, Status: StatusUnchanged, Err: errors.Join(errs...)}
	switch {
	case step.Err != nil:
		step.Status = StatusFailed
		if len(did) > 0 {
			step.Detail = "mounted " + strings.Join(did, ", ")
		}
	case len(did) > 0:
		step.Status, step.Detail = StatusDone, "mounted "+strings.Join(did, ", ")
	}
	return step
}

// mountPoints returns the mount points listed in a mountinfo file.
func mountPoints(mountInfo string) (map[string]bool, error) {
	f, err := os.Open(mountInfo)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	points := map[string]bool{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		if _, mp, _, ok := parseMountInfoLine(sc.Text()); ok {
			points[mp] = true
		}
	}
	return points, sc.Err()
}
